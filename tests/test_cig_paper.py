"""CIG's paper-profile pseudo-target generator (cirlib.generation.paper_cig) and method cig's CLI
options; offline, on tiny random SDXL / SD 1.5 pipelines, a random tiny open_clip CLIP and tiny phis.

The central check is that the pseudo token is injected exactly: a phi whose output is the token
embedding of a real word must give the very conditioning the pipeline's own ``encode_prompt`` gives
for the prompt with that word in place of ``$`` (and so the very same image).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach a model hub

import numpy as np
import pytest
import torch
from tiny_components import (
    clip_tokenizer,
    register_random_backbone,
    save_sd15_pipeline,
    save_sdxl_pipeline,
    unet,
    vae,
)

from cirlib.cli import main
from cirlib.config import REPO_ROOT
from cirlib.generation import LocalModelNotFoundError, load_sd_pipeline
from cirlib.generation.paper_cig import (
    CIG_PHIS,
    CLIP_TOKENIZE_PAD_ID,
    MissingGeneratorFilesError,
    StableDiffusionComposedGenerator,
    load_paper_cig_generator,
    resolve_generator_files,
)
from cirlib.models.clip import TINY_CLIP_CONFIG, CLIPModel, PlaceholderError, build_open_clip
from cirlib.models.phi import Phi
from cirlib.models.released import RELEASED_PHIS, to_upstream_checkpoint
from cirlib.models.weights import MissingWeightsError
from cirlib.run import CIG_PHIS as RUN_CIG_PHIS
from cirlib.run import EvalConfig, RunError, check_method_options, check_paths

TEXTS = ["is red", "has two dogs", "is blue and round", "is bigger", "has no logo"]
WORD = "x"  # one token in the tiny vocabulary ("x</w>")


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random SDXL and SD 1.5 pipelines whose tokenizers know a free-standing '$'."""
    root = tmp_path_factory.mktemp("cig_sd")
    tok = clip_tokenizer(symbols=("$",))
    return {
        "sdxl": save_sdxl_pipeline(root / "sdxl", seed=1, tokenizer=tok),
        "sd15": save_sd15_pipeline(root / "sd15", seed=0, tokenizer=tok),
    }


@pytest.fixture(scope="module")
def pipes(tiny_dirs: dict[str, Path]) -> dict[str, object]:
    return {kind: load_sd_pipeline(folder, kind) for kind, folder in tiny_dirs.items()}


@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    """A random tiny open_clip CLIP (the repo's cir-tiny config): 128-d features, 64x64 input."""
    torch.manual_seed(0)
    return CLIPModel(build_open_clip(TINY_CLIP_CONFIG), TINY_CLIP_CONFIG)


@pytest.fixture(scope="module")
def references() -> list[np.ndarray]:
    """uint8 RGB references of different sizes (the generator takes any)."""
    rng = np.random.default_rng(0)
    sizes = [(48, 64), (64, 64), (30, 40), (64, 80), (20, 20)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _phi(seed: int, in_dim: int = 128, out_dim: int = 16) -> Phi:
    torch.manual_seed(seed)
    phi = Phi(in_dim, out_dim, hidden_dim=32, n_layers=2, dropout=0.0, activation="gelu").eval()
    with torch.no_grad():  # raw CLIP features are small: scale the tokens to word-embedding size
        phi.fc_out.weight.mul_(10)
    return phi


def _word_phi(text_encoder, token_id: int, in_dim: int = 128) -> Phi:
    """A phi whose output is always the token embedding of ``token_id`` in ``text_encoder``."""
    phi = _phi(0, in_dim, text_encoder.config.hidden_size)
    with torch.no_grad():
        for p in phi.parameters():
            p.zero_()
        phi.fc_out.bias.copy_(text_encoder.get_input_embeddings().weight[token_id])
    return phi


def _text_encoders(pipe) -> list:
    return (
        [pipe.text_encoder, pipe.text_encoder_2]
        if getattr(pipe, "text_encoder_2", None)
        else [pipe.text_encoder]
    )


def _generator(pipe, clip: CLIPModel, phis, **kw) -> StableDiffusionComposedGenerator:
    kw = {"steps": 2, "height": 32, "width": 32, **kw}
    return StableDiffusionComposedGenerator(pipe, [(clip, phi, False) for phi in phis], **kw)


def _word_generator(pipe, clip: CLIPModel, **kw) -> StableDiffusionComposedGenerator:
    word_id = pipe.tokenizer(WORD, add_special_tokens=False).input_ids[0]
    return _generator(pipe, clip, [_word_phi(te, word_id) for te in _text_encoders(pipe)], **kw)


def _encode_prompt(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pipeline's own conditioning for plain prompts (no guidance: the positive half only)."""
    with torch.inference_mode():
        if getattr(pipe, "text_encoder_2", None) is not None:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompts, device="cpu", do_classifier_free_guidance=False
            )
            return embeds, pooled
        embeds, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
        return embeds, None


# --------------------------------------------------------------------------- generation
def test_images_are_seeded_per_image_whatever_the_batch(pipes, clip, references) -> None:
    gen = _generator(pipes["sdxl"], clip, [_phi(1), _phi(2)], batch_size=2)
    seeds = [7, 8, 9, 7, 11]
    out = gen.generate(references, TEXTS, seeds)
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, gen.generate(references, TEXTS, seeds))  # same batches: bitwise
    # Alone, or in other batches in another order: the same image. Batched float kernels may round
    # differently, so uint8 values may differ by one level, no more.
    alone = gen.generate(references[3:4], TEXTS[3:4], seeds[3:4])
    assert np.abs(alone[0].astype(int) - out[3]).max() <= 1
    gen4 = _generator(pipes["sdxl"], clip, [e.phi for e in gen.encoders], batch_size=4)
    reversed_ = gen4.generate(references[::-1], TEXTS[::-1], seeds[::-1])[::-1]
    assert np.abs(reversed_.astype(int) - out).max() <= 1
    # the seed, the reference and the text each change the image
    other_seed = gen.generate(references[:1], TEXTS[:1], [99])[0]
    other_reference = gen.generate(references[1:2], TEXTS[:1], [7])[0]
    other_text = gen.generate(references[:1], TEXTS[1:2], [7])[0]
    assert np.abs(other_seed.astype(int) - out[0]).mean() > 5  # new noise
    # a random tiny UNet barely listens to its condition: the images differ a little, the
    # conditioning a lot
    assert not np.array_equal(other_reference, out[0]) and not np.array_equal(other_text, out[0])
    embeds = [
        gen.prompt_embeddings([r], [t])[0] for r, t in [(references[0], TEXTS[0]), (references[1], TEXTS[0])]
    ]
    assert (embeds[0] - embeds[1]).abs().max() > 0.1
    assert gen.generate([], [], []).shape == (0, 32, 32, 3)


def test_output_size_and_input_errors(pipes, clip, references) -> None:
    gen = _generator(pipes["sd15"], clip, [_phi(3)], output_size=24)
    out = gen.generate(references[:2], TEXTS[:2], [0, 1])
    assert out.shape == (2, 24, 24, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="2 references, 1 texts and 2 seeds"):
        gen.generate(references[:2], TEXTS[:1], [0, 1])
    with pytest.raises(TypeError, match="not one string"):
        gen.generate(references[:1], "is red", [0])
    with pytest.raises(ValueError, match=r"reference 1: expected a uint8 RGB image \[H, W, 3\], got float32"):
        gen.generate([references[0], references[1].astype(np.float32)], TEXTS[:2], [0, 1])


@pytest.mark.parametrize("kind", ["sdxl", "sd15"])
def test_pseudo_token_injection_is_exact(kind: str, pipes, clip, references) -> None:
    """phi(image) = the embedding of the word 'x': the conditioning is exactly encode_prompt's for
    'a photo of x that ...' (SDXL: penultimate states of both encoders concatenated, pooled from
    text_encoder_2; SD 1.5: last hidden state), and so is the image."""
    pipe = pipes[kind]
    gen = _word_generator(pipe, clip, pad_id=None)
    words = [f"a photo of {WORD} that {t}" for t in TEXTS[:3]]
    embeds, pooled = gen.prompt_embeddings(references[:3], TEXTS[:3])
    ref_embeds, ref_pooled = _encode_prompt(pipe, words)
    assert embeds.shape == ref_embeds.shape == (3, 77, 32 if kind == "sdxl" else 16)
    assert torch.equal(embeds, ref_embeds)
    if kind == "sdxl":
        assert pooled is not None and pooled.shape == (3, 16) and torch.equal(pooled, ref_pooled)
    else:
        assert pooled is None
    # the hook is gone afterwards: the placeholder is an ordinary token again
    for te in _text_encoders(pipe):
        assert not te.get_input_embeddings()._forward_hooks
    plain, _ = _encode_prompt(pipe, [f"a photo of $ that {TEXTS[0]}"])
    assert not torch.equal(plain[0], embeds[0])
    # end to end: the same image as the pipeline prompted with the word
    image = gen.generate(references[:1], TEXTS[:1], [5])[0]
    with torch.inference_mode():
        direct = pipe(
            words[0],
            num_inference_steps=2,
            height=32,
            width=32,
            generator=torch.Generator().manual_seed(5),
            output_type="np",
        ).images[0]
    np.testing.assert_array_equal(image, (direct * 255).round().astype(np.uint8))


def test_clip_tokenize_padding_changes_only_positions_after_the_end(pipes, clip, references) -> None:
    """CIG tokenises with OpenAI clip.tokenize (zeros after end-of-text); causal attention keeps
    every position up to end-of-text, and the pooled output, as encode_prompt's."""
    pipe = pipes["sdxl"]
    gen = _word_generator(pipe, clip, pad_id=CLIP_TOKENIZE_PAD_ID)
    ids, _ = gen.tokenize(TEXTS[:3])[0]
    embeds, pooled = gen.prompt_embeddings(references[:3], TEXTS[:3])
    ref_embeds, ref_pooled = _encode_prompt(pipe, [f"a photo of {WORD} that {t}" for t in TEXTS[:3]])
    assert torch.equal(pooled, ref_pooled)
    for row in range(3):
        end = int((ids[row] == pipe.tokenizer.eos_token_id).nonzero()[0])
        assert (ids[row, end + 1 :] == 0).all()
        assert torch.equal(embeds[row, : end + 1], ref_embeds[row, : end + 1])
        assert not torch.equal(embeds[row, end + 1 :], ref_embeds[row, end + 1 :])


def test_dimension_mismatches_name_the_phi_and_both_sizes(pipes, clip) -> None:
    with pytest.raises(
        ValueError, match=r"phi #1 outputs 8-dimensional tokens but text_encoder_2 .*hidden size 16"
    ):
        _generator(pipes["sdxl"], clip, [_phi(1), _phi(2, out_dim=8)])
    named = _phi(2, out_dim=24)
    named.released = RELEASED_PHIS["lincir-vit-bigg14"]  # as load_released_phi sets it
    with pytest.raises(ValueError, match=r"phi 'lincir-vit-bigg14' outputs 24-dimensional .* hidden size 16"):
        _generator(pipes["sd15"], clip, [named])
    with pytest.raises(
        ValueError, match=r"phi #0 takes 64-dimensional image features but its CLIP .* gives 128"
    ):
        _generator(pipes["sd15"], clip, [_phi(1, in_dim=64)])
    with pytest.raises(ValueError, match="needs 2 pseudo-token encoder"):
        _generator(pipes["sdxl"], clip, [_phi(1)])


def test_placeholder_errors(pipes, clip, references) -> None:
    pipe = pipes["sd15"]
    with pytest.raises(ValueError, match="exactly once"):
        _generator(pipe, clip, [_phi(1)], prompt="a photo that {text}")
    with pytest.raises(ValueError, match="exactly once"):
        _generator(pipe, clip, [_phi(1)], prompt="a photo of $ and $ that {text}")
    gen = _generator(pipe, clip, [_phi(1)], prompt="{text} then a photo of $")
    with pytest.raises(PlaceholderError, match=r"text 1 .*contains the placeholder '\$' 2 times"):
        gen.generate(references[:2], ["is red", "costs $ 5"], [0, 1])
    long_text = " ".join(["a"] * 80)
    with pytest.raises(
        PlaceholderError, match=r"text 0 .*truncated away \(the prompt is \d+ tokens.* keeps 77"
    ):
        gen.generate(references[:1], [long_text], [0])
    with pytest.raises(ValueError, match=r"no single token for a free-standing '\$'"):
        StableDiffusionComposedGenerator._placeholder_id(clip_tokenizer(), "text_encoder")


# --------------------------------------------------------------------------- loading from files
TEST_ARCH = "cirlib-test-cig-ViT-T-16"


@pytest.fixture(scope="module")
def cig_weights(tmp_path_factory, tiny_dirs) -> dict[str, Path]:
    """A weights folder with a random tiny open_clip CLIP (registered as paper backbone TEST_ARCH,
    16-d features as the tiny pipelines' text width) and two phis in LinCIR's upstream layout,
    registered as releases; plus a CIG-style UNet folder ({model_path}/unet) and a VAE folder."""
    from cirlib.models import weights as weights_mod

    root = tmp_path_factory.mktemp("cig_weights")
    folder = register_random_backbone(root, TEST_ARCH)
    added = []
    for name, real in (("cig-test-l", "cig-lincir-vit-l14"), ("cig-test-g", "lincir-vit-bigg14")):
        spec = RELEASED_PHIS[real]
        arch = {**spec.arch, "input_dim": 16, "output_dim": 16, "hidden_dim": 24}
        spec = dataclasses.replace(spec, name=name, backbone=TEST_ARCH, filename=f"{name}.pt", arch=arch)
        torch.manual_seed(len(added) + 1)
        torch.save(
            {"Phi": to_upstream_checkpoint(spec, spec.build().state_dict())["Phi"], "epoch": 1},
            folder / spec.filename,
        )
        RELEASED_PHIS[name] = spec
        added.append(name)
    unet(7, sdxl=True).save_pretrained(root / "cig_checkpoint" / "unet")
    vae(8).save_pretrained(root / "vae")
    yield {"weights": folder, "unet": root / "cig_checkpoint", "vae": root / "vae", "sdxl": tiny_dirs["sdxl"]}
    for name in added:
        RELEASED_PHIS.pop(name, None)
    weights_mod.PAPER_BACKBONES.pop(TEST_ARCH, None)


def test_load_paper_cig_generator_from_local_files(cig_weights, references) -> None:
    kw = dict(
        weights=cig_weights["weights"],
        unet=cig_weights["unet"],
        vae=cig_weights["vae"],
        phis=("cig-test-l", "cig-test-g"),
        steps=2,
        height=32,
        width=32,
        output_size=16,
    )
    gen = load_paper_cig_generator(cig_weights["sdxl"], "sdxl", **kw)
    assert gen.kind == "sdxl" and gen.pad_id == 0 and gen.guidance_scale is None  # CIG's settings
    assert gen.prompt == "a photo of $ that {text}" and gen.batch_size == 4
    assert [Path(e.phi.weights_path).name for e in gen.encoders] == ["cig-test-l.pt", "cig-test-g.pt"]
    assert [e.input_normalized for e in gen.encoders] == [False, False]
    assert all(e.clip.profile == "paper" for e in gen.encoders)
    images = gen.generate(references[:3], TEXTS[:3], [1600] * 3)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    sig = gen.signature
    assert json.loads(json.dumps(sig)) == sig
    phi_file = cig_weights["weights"] / "cig-test-l.pt"
    assert sig["components"]["phis"][0]["phi"]["sha256"] == hashlib.sha256(phi_file.read_bytes()).hexdigest()
    assert sig["components"]["unet"]["path"] == str((cig_weights["unet"] / "unet").resolve())
    assert "unet/diffusion_pytorch_model.safetensors" in sig["components"]["pipeline"]["files"]
    assert (sig["steps"], sig["height"], sig["output_size"], sig["dtype"]) == (2, 32, 16, "float32")
    # the same files and settings give the same key; another setting, another key
    again = load_paper_cig_generator(cig_weights["sdxl"], "sdxl", **kw)
    assert again.signature == sig
    np.testing.assert_array_equal(again.generate(references[:3], TEXTS[:3], [1600] * 3), images)
    assert load_paper_cig_generator(cig_weights["sdxl"], "sdxl", **{**kw, "steps": 3}).signature != sig
    # half precision (CIG: float16 on CUDA): the text encoders condition in float32 with the stored
    # weights (not a float16 round trip), and the embeddings are the float32 ones, cast
    half = load_paper_cig_generator(cig_weights["sdxl"], "sdxl", **kw, dtype=torch.float16)
    assert half.pipe.unet.dtype == torch.float16 and half.signature["dtype"] == "float16"
    for te16, te32 in zip(half.text_encoders, gen.text_encoders, strict=True):
        assert te16.dtype == torch.float32 and te16 is not half.pipe.text_encoder
        assert all(torch.equal(a, b) for a, b in zip(te16.state_dict().values(), te32.state_dict().values()))
    embeds16, pooled16 = half.prompt_embeddings(references[:2], TEXTS[:2])
    embeds32, pooled32 = gen.prompt_embeddings(references[:2], TEXTS[:2])
    assert embeds16.dtype == torch.float16 and torch.equal(embeds16, embeds32.half())
    assert torch.equal(pooled16, pooled32.half())
    assert half.generate(references[:1], TEXTS[:1], [1600]).shape == (1, 16, 16, 3)


def test_missing_inputs_are_all_listed_before_diffusers_is_imported(tmp_path: Path) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    vae_dir = tmp_path / "vae"
    vae_dir.mkdir()  # exists, but holds no config.json
    code = f"""
import json, sys
from cirlib.generation import LocalModelNotFoundError
from cirlib.generation.paper_cig import MissingGeneratorFilesError, load_paper_cig_generator
from cirlib.models.weights import MissingWeightsError
try:
    load_paper_cig_generator({str(tmp_path / "sdxl")!r}, weights={str(empty)!r}, unet={str(tmp_path / "ckpt")!r},
                             vae={str(vae_dir)!r})
    result = None
except MissingGeneratorFilesError as err:
    result = {{"problems": err.problems, "message": str(err),
              "types": [isinstance(err, LocalModelNotFoundError), isinstance(err, MissingWeightsError)]}}
result["imported"] = [m for m in ("diffusers", "transformers", "open_clip") if m in sys.modules]
print(json.dumps(result))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("CIRLIB_WEIGHTS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] == [] and result["types"] == [True, True]
    problems = result["problems"]
    assert len(problems) == 7, problems
    expected = [
        (str(tmp_path / "sdxl"), "stabilityai/stable-diffusion-xl-base-1.0"),
        (str(tmp_path / "ckpt"), "UNet"),
        (str(vae_dir), "has no config.json"),
        (str(empty / "phi_best.pt"), "drive.google.com"),
        (str(empty / "ViT-L-14-openai.safetensors"), "huggingface.co"),
        (str(empty / "phi_best_giga.pt"), "drive.google.com"),
        (str(empty / "ViT-bigG-14-laion2b_s39b_b160k.safetensors"), "laion/CLIP-ViT-bigG-14"),
    ]
    for problem, (path, hint) in zip(problems, expected, strict=True):
        assert path in problem and hint in problem, problem
    assert result["message"].startswith("CIG generator: 7 missing input(s)")


def test_generator_inputs_are_validated(tmp_path: Path, tiny_dirs) -> None:
    with pytest.raises(ValueError, match="kind must be one of sdxl, sd15"):
        resolve_generator_files(tiny_dirs["sdxl"], "sd3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"needs 2 phi\(s\), one per encoder; got 1"):
        resolve_generator_files(tiny_dirs["sdxl"], "sdxl", phis=("cig-lincir-vit-l14",))
    with pytest.raises(KeyError, match="unknown released phi"):
        resolve_generator_files(tiny_dirs["sd15"], "sd15", phis=("nope",))
    with pytest.raises(MissingGeneratorFilesError, match="not a hub id") as err:  # never downloaded
        resolve_generator_files("stabilityai/stable-diffusion-xl-base-1.0", weights=tmp_path)
    assert isinstance(err.value, LocalModelNotFoundError) and len(err.value.problems) == 5
    with pytest.raises(MissingWeightsError):
        resolve_generator_files(tiny_dirs["sd15"], "sd15", weights=tmp_path)


# --------------------------------------------------------------------------- the CLI options
def _cli_in_subprocess(args: list[str]) -> tuple[int, str, bool]:
    """Run `cirlib <args>` in a fresh interpreter; return (status, stderr, torch imported?)."""
    code = (
        "import sys; from cirlib.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr); sys.exit(rc)"
    )
    env = {k: v for k, v in os.environ.items() if k != "CIRLIB_WEIGHTS"}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    lines = out.stderr.strip().splitlines()
    return out.returncode, "\n".join(lines[:-1]), lines[-1] == "TORCH"


def test_cig_options_are_refused_for_other_methods(capsys) -> None:
    assert main(["eval", "--benchmark", "cirr", "--method", "sum", "--fusion-weight", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cirlib eval: error: --fusion-weight is an option of --method cig only, not of --method sum"
    # given with its default value is still given
    args = ["eval", "--benchmark", "cirr", "--method", "searle", "--profile", "paper", "--n-generated", "1",
            "--generator", "sd", "--guidance", "5"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--generator, --n-generated, --guidance are options of --method cig only" in err
    with pytest.raises(RunError, match="--generation-steps is an option of --method cig only"):
        check_paths(EvalConfig(benchmark="cirr", method="image", generation_steps=10))


def test_cig_option_values_and_profiles_are_checked() -> None:
    base = {"benchmark": "cirr", "method": "cig", "profile": "paper", "generator": Path("sd")}
    for change, message in [
        ({"fusion_weight": 1.5}, r"--fusion-weight must be a number in \[0, 1\]"),
        ({"fusion_weight": float("nan")}, "--fusion-weight must be"),
        ({"n_generated": 0}, "--n-generated must be a whole number >= 1"),
        ({"generation_steps": 0}, "--generation-steps must be"),
        ({"guidance": -1.0}, "--guidance must be a finite number >= 0"),
        ({"generator_kind": "sd3"}, "--generator-kind must be one of sdxl, sd15"),
        ({"profile": "tiny", "generator": None, "unet": Path("u")}, "--unet is for the paper profile"),
        (
            {"profile": "tiny", "generator": None, "generator_kind": "sd15"},
            "--generator-kind is for the paper",
        ),
    ]:
        with pytest.raises(RunError, match=message):
            check_method_options(EvalConfig(**{**base, **change}))
    check_method_options(EvalConfig(**{**base, "fusion_weight": 0.0, "guidance": 7.5, "n_generated": 3}))
    tiny = {
        "benchmark": "cirr",
        "method": "cig",
        "fusion_weight": 1.0,
        "n_generated": 2,
        "generation_steps": 5,
    }
    check_method_options(EvalConfig(**tiny, guidance=0.0))  # the tiny generator has steps and guidance too
    assert RUN_CIG_PHIS is CIG_PHIS  # one mapping, shared through the torch-free cirlib.generation.files


def test_cig_paper_needs_generator_before_torch_is_imported() -> None:
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "cirr", "--method", "cig"]
    )
    assert rc == 2 and not torch_imported and err.count("\n") == 0
    assert (
        "needs --generator DIR" in err
        and "stabilityai/stable-diffusion-xl-base-1.0" in err
        and "--unet" in err
    )


def test_cig_generator_inputs_are_all_listed_before_torch_is_imported(tmp_path: Path) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "cirr", "--method", "cig", "--generator", str(tmp_path / "sdxl"),
         "--unet", str(tmp_path / "ckpt"), "--weights", str(empty)]
    )  # fmt: skip
    assert rc == 2 and not torch_imported and err.count("\n") == 0
    assert "cig's generator: 6 missing input(s)" in err
    for expected in (
        f"--generator {tmp_path / 'sdxl'} does not exist",
        f"--unet {tmp_path / 'ckpt'} does not exist",
        str(empty / "phi_best.pt"),
        str(empty / "phi_best_giga.pt"),
        str(empty / "ViT-L-14-openai.safetensors"),
        str(empty / "ViT-bigG-14-laion2b_s39b_b160k.safetensors"),
    ):
        assert expected in err, expected


def test_cig_options_reach_build_method_and_run_json(monkeypatch, tmp_path: Path) -> None:
    import cirlib.methods
    from cirlib.run import build

    seen: dict[str, dict] = {}

    class Stop(Exception):
        pass

    def fake_build_method(name: str, profile: str, **options):
        seen[profile] = options
        raise Stop

    monkeypatch.setattr(cirlib.methods, "build_method", fake_build_method)
    paper = EvalConfig(
        benchmark="cirr", method="cig", profile="paper", device="cpu", generator=tmp_path / "sd",
        generator_kind="sd15", unet=tmp_path / "u", fusion_weight=0.7, n_generated=2, generation_steps=30, guidance=4.0,
    )  # fmt: skip
    with pytest.raises(Stop):
        build(paper)
    assert {k: seen["paper"][k] for k in ("generator", "generator_kind", "unet", "vae")} == {
        "generator": tmp_path / "sd",
        "generator_kind": "sd15",
        "unet": tmp_path / "u",
        "vae": None,
    }
    assert (seen["paper"]["fusion_weight"], seen["paper"]["n_generated"]) == (0.7, 2)
    assert (seen["paper"]["generation_steps"], seen["paper"]["guidance"]) == (30, 4.0)
    assert seen["paper"]["backbone"] == "ViT-L-14" and seen["paper"]["form"] == "cirr"
    assert (seen["paper"]["split"], seen["paper"]["form"]) == ("val", "cirr")  # for the official weight
    with pytest.raises(Stop):
        build(EvalConfig(benchmark="circo", split="test", method="cig", fusion_weight=0.9, guidance=2.0))
    assert seen["tiny"] == {
        "generator": None,
        "generator_kind": "sdxl",
        "unet": None,
        "vae": None,
        "fusion_weight": 0.9,
        "n_generated": 1,
        "generation_steps": None,  # the generator's own
        "guidance": 2.0,
        "form": "circo",
        "split": "test",
    }
    with pytest.raises(Stop):
        build(EvalConfig(benchmark="cirr", method="sum", profile="paper", device="cpu"))
    assert "fusion_weight" not in seen["paper"]
    record = dataclasses.asdict(paper)  # run.json's "config" is built from this
    assert record["generation_steps"] == 30 and record["generator_kind"] == "sd15"


def test_check_paths_covers_the_generator_and_the_retrieval_phi(tmp_path: Path) -> None:
    """Every file of a paper-profile cig run, found by path checks alone (the files may be empty):
    the generator's folders, its two phis and CLIPs, and the retrieval phi (SEARLE's, as
    SEARLE_CIG) with its CLIP."""
    data = tmp_path / "CIRCO"  # the smallest layout resolve_layout accepts
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "val.json").write_text("[]")
    (data / "COCO2017_unlabeled" / "unlabeled2017").mkdir(parents=True)
    for folder, index in (("sdxl", "model_index.json"), ("ckpt/unet", "config.json"), ("vae", "config.json")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / index).write_text("{}")
    weights = tmp_path / "weights"
    weights.mkdir()
    names = ["phi_best.pt", "phi_best_giga.pt", "ViT-L-14-openai.safetensors",
             "ViT-bigG-14-laion2b_s39b_b160k.safetensors", "SEARLE_ViT-L14.pt"]  # fmt: skip
    for name in names:
        (weights / name).write_bytes(b"")
    cfg = EvalConfig(
        benchmark="circo", method="cig", profile="paper", data=data, weights=weights,
        generator=tmp_path / "sdxl", unet=tmp_path / "ckpt", vae=tmp_path / "vae",
    )  # fmt: skip
    found = check_paths(cfg)
    assert Path(found["phi_weights"]).name == "SEARLE_ViT-L14.pt"
    assert Path(found["clip_weights"]).name == "ViT-L-14-openai.safetensors"
    files = found["generator_files"]
    assert files["unet"] == str(tmp_path / "ckpt" / "unet")  # CIG's {model_path}/unet
    assert Path(files["phi:lincir-vit-bigg14"]).name == "phi_best_giga.pt"
    assert Path(files["clip:ViT-bigG-14"]).name == "ViT-bigG-14-laion2b_s39b_b160k.safetensors"
    (weights / "SEARLE_ViT-L14.pt").unlink()
    with pytest.raises(RunError, match="SEARLE_ViT-L14.pt"):
        check_paths(cfg)
    with pytest.raises(RunError, match="is a lincir network, not searle"):
        check_paths(dataclasses.replace(cfg, phi="lincir-vit-l14"))


def test_cig_retrieves_through_the_paper_generator(cig_weights, tmp_path: Path, monkeypatch) -> None:
    """The CIG method end to end over the SDXL-kind generator (tiny random components): a retrieval
    phi on the paper backbone, pseudo-targets generated once and cached, every fusion level scored."""
    from cirlib.evaluation import evaluate
    from cirlib.methods.cig import CIG
    from cirlib.models.paper import load_clip
    from cirlib.models.released import RELEASED_PHIS, load_released_phi
    from cirlib.retrieval import EmbeddingCache
    from cirlib.world import load_world_benchmark

    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path / "cache"))
    bench = load_world_benchmark("cirr", "val", n_queries=4)
    generator = load_paper_cig_generator(
        cig_weights["sdxl"],
        "sdxl",
        weights=cig_weights["weights"],
        phis=("cig-test-l", "cig-test-g"),
        steps=2,
        height=32,
        width=32,
    )
    clip = load_clip(TEST_ARCH, profile="paper", weights=cig_weights["weights"])
    spec = RELEASED_PHIS["cig-test-l"]
    cig = CIG(
        clip,
        load_released_phi(spec, cig_weights["weights"]),
        generator,
        weight=0.5,
        cache=EmbeddingCache(tmp_path / "emb"),
        phi_input_normalized=spec.input_normalized,
    )
    first = evaluate(cig, bench)
    assert cig.pseudo_target_cache.generated == len(bench.queries)
    assert 0.0 <= first.summary["recall@1"] <= 100.0
    for fusion in ("image", "token"):
        evaluate(cig.with_options(fusion=fusion), bench)
    assert cig.pseudo_target_cache.generated == len(bench.queries)  # reused, never regenerated
    fresh = CIG(
        clip,
        cig.phi,
        generator,
        weight=0.5,
        cache=EmbeddingCache(tmp_path / "emb"),
        phi_input_normalized=spec.input_normalized,
    )
    again = evaluate(fresh, bench)
    assert fresh.pseudo_target_cache.generated == 0  # read back from disk
    assert again.rankings == first.rankings
