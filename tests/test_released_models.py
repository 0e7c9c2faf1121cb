"""Released phi checkpoints in their upstream formats, and the local generative pipelines; all offline.

Part 1 writes random checkpoints laid out exactly as SEARLE, LinCIR, CIG and Pic2Word save theirs (as
read from their code, see cirlib/models/released.py) and checks that our Phi reproduces a forward pass
of the upstream architecture written out here with torch.nn.functional. Part 2 saves tiny random
diffusers / transformers models with save_pretrained and loads them back through cirlib.generation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach a model hub

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cirlib.models.released import (
    PROMPT_FORMS,
    RELEASED_PHIS,
    ReleasedWeightsError,
    convert_state_dict,
    expected_phi_path,
    load_released_phi,
    released_for,
    resolve_phi_weights,
)
from cirlib.models.weights import PAPER_BACKBONES, WEIGHTS_ENV, MissingWeightsError

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- Part 1: released phi
#: name -> (upstream layout, input dim, hidden dim, output dim), as the upstream code builds them:
#: SEARLE hubconf.py (B/32 512-2048-512, L/14 768-3072-768); LinCIR validate.py (projection_dim,
#: 4x, hidden_size); CIG extract_lincir_feat.py (768-3072-768, 1280-5120-1280); Pic2Word
#: eval_retrieval.py IM2TEXT(embed_dim=768, middle_dim=512, output_dim=768, n_layer=2).
UPSTREAM = {
    "searle-vit-b32": ("searle", 512, 2048, 512),
    "searle-xl-vit-l14": ("searle", 768, 3072, 768),
    "lincir-vit-l14": ("searle", 768, 3072, 768),
    "cig-lincir-vit-l14": ("searle", 768, 3072, 768),
    "lincir-vit-bigg14": ("searle", 1280, 5120, 1280),
    "pic2word-vit-l14": ("pic2word", 768, 512, 768),
}


def _linear(gen: torch.Generator, out_dim: int, in_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    w = (torch.randn(out_dim, in_dim, generator=gen) / in_dim**0.5).to(dtype)
    b = (torch.randn(out_dim, generator=gen) * 0.1).to(dtype)
    return w, b


def upstream_checkpoint(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    """A random checkpoint laid out as upstream saves it."""
    layout, d_in, hidden, d_out = UPSTREAM[name]
    gen = torch.Generator().manual_seed(seed)
    if layout == "searle":
        # SEARLE src/phi.py / LinCIR models.py: one Sequential(Linear, GELU, Dropout, Linear, GELU,
        # Dropout, Linear); train_phi.py's save_phi stores {'epoch', 'Phi': state_dict}.
        sd = OrderedDict()
        for idx, (o, i) in zip((0, 3, 6), ((hidden, d_in), (hidden, hidden), (d_out, hidden))):
            sd[f"layers.{idx}.weight"], sd[f"layers.{idx}.bias"] = _linear(gen, o, i, dtype)
        return {"epoch": 12, "Phi": sd}
    # Pic2Word model/model.py IM2TEXT: layers = Sequential(Sequential(Linear, Dropout, ReLU) x n_layer),
    # fc_out; src/main.py saves the DDP-wrapped modules, hence 'module.' on every key, next to the CLIP.
    sd = OrderedDict()
    sd["module.fc_out.weight"], sd["module.fc_out.bias"] = _linear(gen, d_out, hidden, dtype)
    for i, in_dim in enumerate((d_in, hidden)):
        sd[f"module.layers.{i}.0.weight"], sd[f"module.layers.{i}.0.bias"] = _linear(
            gen, hidden, in_dim, dtype
        )
    return {
        "epoch": 30,
        "name": "pic2word",
        "state_dict": {"module.token_embedding.weight": torch.randn(8, 4, generator=gen)},
        "state_dict_img2text": sd,
        "optimizer": {
            "state": {},
            "param_groups": [
                {"lr": 1e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.1, "params": [0]}
            ],
        },
    }


def upstream_forward(name: str, ckpt: dict, x: torch.Tensor) -> torch.Tensor:
    """The upstream forward pass in eval mode (dropout off), written out with functional ops."""
    if UPSTREAM[name][0] == "searle":
        sd = {k: v.float() for k, v in ckpt["Phi"].items()}
        h = F.gelu(F.linear(x, sd["layers.0.weight"], sd["layers.0.bias"]))
        h = F.gelu(F.linear(h, sd["layers.3.weight"], sd["layers.3.bias"]))
        return F.linear(h, sd["layers.6.weight"], sd["layers.6.bias"])
    sd = {k.removeprefix("module."): v.float() for k, v in ckpt["state_dict_img2text"].items()}
    h = x
    for i in range(2):  # Linear -> Dropout (identity in eval) -> ReLU
        h = F.relu(F.linear(h, sd[f"layers.{i}.0.weight"], sd[f"layers.{i}.0.bias"]))
    return F.linear(h, sd["fc_out.weight"], sd["fc_out.bias"])


def test_registry_holds_the_verified_facts() -> None:
    assert set(RELEASED_PHIS) == set(UPSTREAM)
    assert len({s.filename for s in RELEASED_PHIS.values()}) == len(RELEASED_PHIS)
    for name, spec in RELEASED_PHIS.items():
        layout, d_in, hidden, d_out = UPSTREAM[name]
        assert spec.name == name and spec.layout == layout
        assert spec.backbone in PAPER_BACKBONES
        assert (spec.arch["input_dim"], spec.arch["hidden_dim"], spec.arch["output_dim"]) == (
            d_in,
            hidden,
            d_out,
        )
        assert spec.arch["activation"] == ("relu" if layout == "pic2word" else "gelu")
        assert spec.input_normalized is False  # every released phi takes the raw CLIP embedding
        assert tuple(spec.prompts) == PROMPT_FORMS
        for prompt in spec.prompts.values():
            assert prompt.count("$") == 1 and "{text}" in prompt
    for name in ("searle-vit-b32", "searle-xl-vit-l14", "lincir-vit-l14", "lincir-vit-bigg14"):
        assert set(RELEASED_PHIS[name].prompts.values()) == {"a photo of $ that {text}"}
    assert RELEASED_PHIS["pic2word-vit-l14"].prompt("cirr") == "a photo of $ , {text}"
    assert RELEASED_PHIS["pic2word-vit-l14"].fashioniq_captions == "second_first"
    assert RELEASED_PHIS["searle-xl-vit-l14"].preprocess == "targetpad"
    assert RELEASED_PHIS["searle-vit-b32"].source.endswith("hubconf.py)")
    assert "SEARLE_ViT-B32.pt" in RELEASED_PHIS["searle-vit-b32"].source


def test_released_for_picks_the_methods_own_release_and_lists_the_rest() -> None:
    assert released_for("searle", "ViT-B-32").name == "searle-vit-b32"
    assert released_for("searle", "ViT-L-14").name == "searle-xl-vit-l14"
    assert released_for("lincir", "ViT-L-14").name == "lincir-vit-l14"  # not CIG's copy
    assert released_for("lincir", "ViT-bigG-14").filename == "phi_best_giga.pt"
    assert released_for("pic2word", "ViT-L-14").container == "state_dict_img2text"
    with pytest.raises(KeyError) as err:
        released_for("pic2word", "ViT-B-32")
    assert "pic2word on ViT-L-14 (pic2word-vit-l14)" in str(err.value)
    assert "searle on ViT-B-32" in str(err.value)


def test_prompts_keep_the_placeholder_one_token_in_the_clip_tokenizer() -> None:
    from open_clip import SimpleTokenizer

    tok = SimpleTokenizer()
    dollar, star = tok.encode("$"), tok.encode("*")
    assert dollar == [259] and len(star) == 1  # SEARLE / LinCIR replace token 259
    for spec in RELEASED_PHIS.values():
        for prompt in spec.prompts.values():
            ids = tok.encode(prompt.replace("{text}", "is red and has no logo").replace("$", " $ "))
            assert ids.count(259) == 1
    # Pic2Word writes '*' where we write '$': same token count, so the same positions.
    cirr = RELEASED_PHIS["pic2word-vit-l14"].prompt("cirr").replace("{text}", "two dogs")
    assert len(tok.encode(cirr)) == len(tok.encode(cirr.replace("$", "*")))


@pytest.mark.parametrize("name", list(UPSTREAM))
def test_upstream_checkpoint_loads_into_our_phi_with_identical_outputs(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bigG stored in fp16 (also checks the cast to float32); the others in fp32
    dtype = torch.float16 if name == "lincir-vit-bigg14" else torch.float32
    ckpt = upstream_checkpoint(name, seed=len(name), dtype=dtype)
    spec = RELEASED_PHIS[name]
    path = tmp_path / spec.filename
    torch.save(ckpt, path)
    if name == "searle-vit-b32":  # through $CIRLIB_WEIGHTS
        monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
        phi = load_released_phi(name)
    elif name == "pic2word-vit-l14":  # a file path
        phi = load_released_phi(spec, path)
    else:  # a folder
        phi = load_released_phi(name, tmp_path)
    assert phi.released is spec and phi.weights_path == str(path)
    assert not phi.training
    assert all(p.dtype == torch.float32 for p in phi.parameters())
    x = torch.randn(5, UPSTREAM[name][1], generator=torch.Generator().manual_seed(1)) * 3  # raw-feature scale
    with torch.no_grad():
        ours = phi(x)
    torch.testing.assert_close(ours, upstream_forward(name, ckpt, x), rtol=1e-5, atol=1e-5)
    assert ours.shape == (5, UPSTREAM[name][3])
    torch.testing.assert_close(phi.pseudo_tokens(x), ours)


def test_missing_file_names_the_expected_path_and_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = expected_phi_path("searle-xl-vit-l14", tmp_path)
    assert expected == tmp_path / "SEARLE_ViT-L14.pt"
    with pytest.raises(MissingWeightsError) as err:
        load_released_phi("searle-xl-vit-l14", tmp_path)
    msg = str(err.value)
    assert str(expected) in msg
    assert "https://github.com/miccunifi/SEARLE/releases/download/weights/SEARLE_ViT-L14.pt" in msg
    assert isinstance(err.value, FileNotFoundError)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(MissingWeightsError, match=WEIGHTS_ENV) as err:
        resolve_phi_weights("lincir-vit-l14")
    assert "huggingface.co/navervision/zeroshot-cir-models" in str(err.value)
    with pytest.raises(KeyError, match="known: searle-vit-b32"):
        resolve_phi_weights("searle-vit-h14", tmp_path)


def test_wrong_keys_name_the_file_and_the_keys(tmp_path: Path) -> None:
    ckpt = upstream_checkpoint("searle-vit-b32")
    ckpt["Phi"]["layers.9.weight"] = ckpt["Phi"].pop("layers.6.weight")
    path = tmp_path / "SEARLE_ViT-B32.pt"
    torch.save(ckpt, path)
    with pytest.raises(ReleasedWeightsError) as err:
        load_released_phi("searle-vit-b32", tmp_path)
    msg = str(err.value)
    assert (
        str(path) in msg
        and "missing keys: layers.6.weight" in msg
        and "unexpected keys: layers.9.weight" in msg
    )
    # A Pic2Word file given as a SEARLE one: its top-level keys are listed.
    torch.save(upstream_checkpoint("pic2word-vit-l14"), path)
    with pytest.raises(ReleasedWeightsError, match="no state dict under key 'Phi'.*state_dict_img2text"):
        load_released_phi("searle-vit-b32", path)
    with pytest.raises(ReleasedWeightsError, match="holds a list"):
        convert_state_dict(RELEASED_PHIS["lincir-vit-l14"], [1, 2])  # type: ignore[arg-type]


def test_wrong_shapes_and_dtypes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "SEARLE_ViT-B32.pt"
    torch.save(upstream_checkpoint("searle-vit-b32"), path)
    # The B/32 file loaded as SEARLE-XL (a realistic mix-up): the first mismatch is named.
    with pytest.raises(ReleasedWeightsError) as err:
        load_released_phi("searle-xl-vit-l14", path)
    msg = str(err.value)
    assert str(path) in msg and "layers.0.weight has shape [2048, 512], expected [3072, 768]" in msg
    ckpt = upstream_checkpoint("searle-vit-b32")
    ckpt["Phi"]["layers.3.bias"] = torch.zeros(2048, dtype=torch.int64)
    with pytest.raises(ReleasedWeightsError, match="layers.3.bias is a torch.int64 tensor"):
        convert_state_dict(RELEASED_PHIS["searle-vit-b32"], ckpt, source=path)


class _Payload:
    """Unpickling this would create a file: weights_only must refuse before calling anything."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_refused_by_weights_only(tmp_path: Path) -> None:
    ckpt = upstream_checkpoint("lincir-vit-l14")
    ckpt["args"] = argparse.Namespace(lr=1e-4)
    path = tmp_path / "lincir_large.pt"
    torch.save(ckpt, path)
    with pytest.raises(ReleasedWeightsError) as err:
        load_released_phi("lincir-vit-l14", tmp_path)
    assert str(path) in str(err.value) and "argparse.Namespace" in str(err.value)
    marker = tmp_path / "unpickled"
    torch.save({"Phi": ckpt["Phi"], "x": _Payload(marker)}, path)
    with pytest.raises(ReleasedWeightsError, match="weights_only=True"):
        load_released_phi("lincir-vit-l14", path)
    assert not marker.exists()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ReleasedWeightsError, match=str(path)):
        load_released_phi("lincir-vit-l14", path)


def test_path_checks_import_neither_torch_nor_diffusers(tmp_path: Path) -> None:
    """Run in a fresh interpreter: resolving phi paths needs no torch, and a generation loader fails
    on a hub id before importing diffusers or transformers."""
    code = f"""
import json, sys
from cirlib.models import released
from cirlib.models.weights import MissingWeightsError
try:
    released.resolve_phi_weights("searle-xl-vit-l14", {str(tmp_path)!r})
except MissingWeightsError:
    pass
phi_torch = "torch" in sys.modules
from cirlib.generation import LocalModelNotFoundError, load_sd_pipeline
try:
    load_sd_pipeline("stabilityai/stable-diffusion-xl-base-1.0", "sdxl")
    raised = False
except LocalModelNotFoundError as err:
    raised = "stabilityai/stable-diffusion-xl-base-1.0" in str(err)
print(json.dumps([phi_torch, raised, "diffusers" in sys.modules, "transformers" in sys.modules]))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, True, False, False]


# --------------------------------------------------------------------------- Part 2: generation
# The tiny diffusers / transformers builders are shared with test_cig_paper.py and test_ipcir_paper.py.
from tiny_components import clip_tokenizer as _clip_tokenizer  # noqa: E402
from tiny_components import save_blip2 as _save_blip2  # noqa: E402
from tiny_components import save_llm as _save_llm  # noqa: E402
from tiny_components import text_config as _text_config  # noqa: E402
from tiny_components import unet as _unet  # noqa: E402
from tiny_components import vae as _vae  # noqa: E402

from cirlib.generation import (  # noqa: E402
    LocalModelNotFoundError,
    caption_images,
    generate_text,
    load_captioner,
    load_llm,
    load_sd_pipeline,
)


@pytest.fixture(scope="module")
def sd_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny SD 1.x and SDXL pipelines, plus a CIG-style UNet folder and a VAE folder, saved to disk."""
    from diffusers import (
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    root = tmp_path_factory.mktemp("sd")
    tok = _clip_tokenizer()
    torch.manual_seed(0)
    StableDiffusionPipeline(
        vae=_vae(0),
        text_encoder=CLIPTextModel(_text_config(len(tok))),
        tokenizer=tok,
        unet=_unet(0, sdxl=False),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(root / "sd15")
    torch.manual_seed(1)
    StableDiffusionXLPipeline(
        vae=_vae(1),
        text_encoder=CLIPTextModel(_text_config(len(tok))),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(len(tok))),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=_unet(1, sdxl=True),
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1),
        add_watermarker=False,
    ).save_pretrained(root / "sdxl")
    _unet(7, sdxl=True).save_pretrained(root / "cig_checkpoint" / "unet")  # CIG: {model_path}/unet
    _vae(8).save_pretrained(root / "sdxl_vae_fp16_fix")
    return {
        "sd15": root / "sd15",
        "sdxl": root / "sdxl",
        "cig": root / "cig_checkpoint",
        "vae": root / "sdxl_vae_fp16_fix",
    }


def test_sd15_pipeline_from_a_local_folder_generates(sd_dirs: dict[str, Path]) -> None:
    pipe = load_sd_pipeline(sd_dirs["sd15"], "sd15")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None
    out = pipe(
        "a red cube", num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0)
    )
    assert len(out.images) == 1 and out.images[0].size == (32, 32)


def test_sdxl_pipeline_takes_cig_unet_and_vae_folders(sd_dirs: dict[str, Path]) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    pipe = load_sd_pipeline(sd_dirs["sdxl"], "sdxl", unet=sd_dirs["cig"], vae=sd_dirs["vae"])
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    swapped_unet = UNet2DConditionModel.from_pretrained(sd_dirs["cig"] / "unet")
    swapped_vae = AutoencoderKL.from_pretrained(sd_dirs["vae"])
    base_unet = UNet2DConditionModel.from_pretrained(sd_dirs["sdxl"] / "unet")
    for got, want in ((pipe.unet, swapped_unet), (pipe.vae, swapped_vae)):
        for (k, a), (_, b) in zip(got.state_dict().items(), want.state_dict().items()):
            assert torch.equal(a, b), k
    assert not torch.equal(pipe.unet.conv_in.weight, base_unet.conv_in.weight)
    out = pipe(
        "a red cube", num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0)
    )
    assert out.images[0].size == (32, 32)
    assert np.asarray(out.images[0]).dtype == np.uint8


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BLIP-2 (ViT, Q-Former, OPT) with a byte-level tokenizer, saved to disk."""
    return _save_blip2(tmp_path_factory.mktemp("blip2"))


def test_captioner_from_a_local_folder_captions_images(captioner_dir: Path) -> None:
    processor, model = load_captioner(captioner_dir)
    assert type(processor).__name__ == "Blip2Processor"
    assert type(model).__name__ == "Blip2ForConditionalGeneration" and not model.training
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(3)]
    captions = caption_images(model, processor, images, max_new_tokens=4, batch_size=2)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert captions == caption_images(model, processor, images, max_new_tokens=4)  # greedy: batch-invariant
    prompt = "Question: what is it? Answer:"
    asked = caption_images(model, processor, images[:1], prompt=prompt, max_new_tokens=4)
    assert len(asked) == 1 and not asked[0].startswith("Question")  # only the generated text
    sampled = caption_images(model, processor, images[:2], max_new_tokens=3, num_captions=2, do_sample=True)
    assert len(sampled) == 4
    with pytest.raises(ValueError, match="do_sample"):
        caption_images(model, processor, images[:1], num_captions=2)


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a byte-level tokenizer and a chat template, saved to disk."""
    return _save_llm(tmp_path_factory.mktemp("llm"))


def test_llm_from_a_local_folder_generates_text(llm_dir: Path) -> None:
    tokenizer, model = load_llm(llm_dir)
    assert tokenizer.chat_template is not None and tokenizer.padding_side == "left"
    prompts = ["Describe the edit.", "Add a dog to the left of the car, please."]
    out = generate_text(model, tokenizer, prompts, max_new_tokens=5, seed=0)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert out == generate_text(model, tokenizer, prompts, max_new_tokens=5, seed=3)  # greedy
    assert generate_text(model, tokenizer, prompts[:1], max_new_tokens=5) == out[:1]  # padding-invariant
    plain = generate_text(model, tokenizer, prompts, max_new_tokens=3, chat=False, system="Be brief.")
    assert len(plain) == 2
    sampled = generate_text(model, tokenizer, prompts, max_new_tokens=5, seed=1, do_sample=True)
    assert sampled == generate_text(model, tokenizer, prompts, max_new_tokens=5, seed=1, do_sample=True)
    with pytest.raises(TypeError):
        generate_text(model, tokenizer, "one string", max_new_tokens=2)


def test_loaders_refuse_missing_folders_and_hub_ids(tmp_path: Path, sd_dirs: dict[str, Path]) -> None:
    hub_id = "stabilityai/stable-diffusion-xl-base-1.0"
    with pytest.raises(LocalModelNotFoundError) as err:
        load_sd_pipeline(hub_id, "sdxl")
    assert repr(hub_id) in str(err.value) and "does not exist" in str(err.value)
    assert "huggingface-cli download" in str(err.value) and isinstance(err.value, FileNotFoundError)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LocalModelNotFoundError, match="has no model_index.json") as err:
        load_sd_pipeline(empty, "sd15")
    assert str(empty) in str(err.value) and "stable-diffusion-v1-5" in str(err.value)
    with pytest.raises(LocalModelNotFoundError, match="UNet folder.*has no config.json"):
        load_sd_pipeline(sd_dirs["sdxl"], "sdxl", unet=empty)
    with pytest.raises(LocalModelNotFoundError, match="VAE folder.*madebyollin/sdxl-vae-fp16-fix"):
        load_sd_pipeline(sd_dirs["sdxl"], "sdxl", vae=tmp_path / "no_vae")
    with pytest.raises(ValueError, match="kind must be"):
        load_sd_pipeline(sd_dirs["sdxl"], "sd3")  # type: ignore[arg-type]
    with pytest.raises(LocalModelNotFoundError, match="Salesforce/blip2-opt-2.7b"):
        load_captioner("Salesforce/blip2-opt-2.7b")
    (empty / "config.json").write_text("{}")
    with pytest.raises(LocalModelNotFoundError, match="has no tokenizer.json or tokenizer_config.json"):
        load_captioner(empty)
    with pytest.raises(LocalModelNotFoundError, match="language model folder.*does not exist"):
        load_llm(tmp_path / "qwen")
