"""IP-CIR's paper-profile chain (BLIP-2 captioner, LLM planner, text-box GLIGEN) on tiny random
models saved offline; the folder checks in a fresh interpreter (no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach a model hub

import numpy as np
import pytest
import torch
from tiny_components import save_blip2, save_gligen_pipeline, save_llm, save_sd15_pipeline

from cirlib.generation import (
    IPCIR_PLAN_PROMPT,
    Blip2Captioner,
    GligenLayoutGenerator,
    IPCIRFiles,
    LLMPlanner,
    LocalModelNotFoundError,
    MissingGeneratorFilesError,
    MissingIPCIRFilesError,
    load_ipcir_components,
    resolve_ipcir_files,
)
from cirlib.generation.files import gligen_problem
from cirlib.generation.layout import LayoutObject, Plan, format_plan, parse_plan
from cirlib.generation.paper_ipcir import FORMAT_LINE, IPCIR_PLAN_EXAMPLES, folder_digest, plan_line

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
#: int(beta * steps) = 1 grounded step of 2 (the paper: 15 of 50)
GEN_OPTIONS = {"steps": 2, "scheduled_sampling_beta": 0.5, "height": SIZE, "width": SIZE, "batch_size": 2}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ipcir")
    return {
        "captioner": save_blip2(root / "blip2"),
        "llm": save_llm(root / "llm", max_position_embeddings=2048),  # the few-shot prompt is long
        "generator": save_gligen_pipeline(root / "gligen"),
    }


@pytest.fixture(scope="module")
def components(dirs: dict[str, Path]) -> tuple[Blip2Captioner, LLMPlanner, GligenLayoutGenerator]:
    return load_ipcir_components(
        dirs["captioner"],
        dirs["llm"],
        dirs["generator"],
        captioner_options={"max_new_tokens": 4, "batch_size": 2},
        planner_options={"max_new_tokens": 12, "batch_size": 2},
        generator_options=GEN_OPTIONS,
    )


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 24), (32, 32), (17, 40)]]


PLAN = Plan("a red cube left of a blue ball", (LayoutObject("red cube", (0.1, 0.3, 0.45, 0.7)),
            LayoutObject("blue ball", (0.55, 0.3, 0.9, 0.7))), "grey floor")  # fmt: skip
OTHER = Plan("two green trees", (LayoutObject("green tree", (0.0, 0.1, 0.5, 1.0)),
             LayoutObject("green tree", (0.5, 0.1, 1.0, 1.0))), "")  # fmt: skip
EMPTY = Plan("a red cube left of a blue ball", ())


# --------------------------------------------------------------------------- loading and identity
def test_components_load_from_local_folders(components, dirs) -> None:
    captioner, planner, generator = components
    assert isinstance(captioner, Blip2Captioner) and isinstance(planner, LLMPlanner)
    assert isinstance(generator, GligenLayoutGenerator)
    assert type(generator.pipe).__name__ == "StableDiffusionGLIGENPipeline"
    assert generator.pipe.safety_checker is None
    assert generator.pipe.unet.config.attention_type == "gated"
    for part, name in zip(components, ("captioner", "llm", "generator")):
        sig = part.signature
        json.dumps(sig)
        assert (
            sig["folder"] == folder_digest(dirs[name])
            and sig["device"] == "cpu"
            and sig["dtype"] == "float32"
        )
    assert captioner.signature["max_new_tokens"] == 4 and captioner.signature["prompt"] is None
    assert planner.signature["prompt"] == IPCIR_PLAN_PROMPT and planner.signature["max_new_tokens"] == 12
    gen_sig = generator.signature
    assert (gen_sig["steps"], gen_sig["guidance_scale"], gen_sig["scheduled_sampling_beta"]) == (2, 7.5, 0.5)
    assert (gen_sig["height"], gen_sig["width"]) == (SIZE, SIZE) and "diffusers" in gen_sig["versions"]
    assert "batch_size" not in gen_sig  # images do not depend on it
    # the folder digest follows the content, not the path; the settings reach the signature
    assert folder_digest(dirs["llm"]) != folder_digest(dirs["captioner"])
    other = GligenLayoutGenerator(dirs["generator"], **{**GEN_OPTIONS, "steps": 5})
    assert other.signature != gen_sig and other.signature["folder"] == gen_sig["folder"]
    default = GligenLayoutGenerator(dirs["generator"])  # paper settings, the pipeline's own size
    assert (default.steps, default.guidance_scale, default.scheduled_sampling_beta) == (50, 7.5, 0.3)
    assert default.height == default.width == 16 * default.pipe.vae_scale_factor  # sample_size 16


def test_resolve_ipcir_files_accepts_the_tiny_folders(dirs) -> None:
    files = resolve_ipcir_files(dirs["captioner"], dirs["llm"], dirs["generator"])
    assert files == IPCIRFiles(dirs["captioner"], dirs["llm"], dirs["generator"])


# --------------------------------------------------------------------------- captioner
def test_captions_are_strings_one_per_image(components, images) -> None:
    captioner = components[0]
    captions = captioner.caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert captioner.caption(images[1:2]) == captions[1:2]  # greedy, batch-invariant
    assert captioner.caption([]) == []


# --------------------------------------------------------------------------- planner
def test_prompt_examples_are_valid_plans_in_format_plan_form() -> None:
    assert len(IPCIR_PLAN_EXAMPLES) == 2
    for caption, text, plan in IPCIR_PLAN_EXAMPLES:
        line = f"Answer: {format_plan(plan)}"
        assert line in IPCIR_PLAN_PROMPT and caption in IPCIR_PLAN_PROMPT and text in IPCIR_PLAN_PROMPT
        assert parse_plan(plan_line(line)) == plan
    assert IPCIR_PLAN_PROMPT.count("{caption}") == 1 and IPCIR_PLAN_PROMPT.count("{text}") == 1
    assert f"format:\n{FORMAT_LINE}\n" in IPCIR_PLAN_PROMPT and "percent" in IPCIR_PLAN_PROMPT


def test_planner_prompts_reach_the_model_and_one_text_comes_back_per_query(components, monkeypatch) -> None:
    planner = components[1]
    captions = ["a dog on a sofa", "a {weird} caption", "a car"]
    texts = ["make it a cat", "add a hat", "is red"]
    prompts = planner.prompts(captions, texts)
    for prompt, caption, text in zip(prompts, captions, texts):
        assert f"Reference caption: {caption}\nModification: {text}\nAnswer:" in prompt
    seen: list[str] = []
    generate = planner.model.generate

    def spy(**kwargs):
        seen.extend(planner.tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=True))
        return generate(**kwargs)

    monkeypatch.setattr(planner.model, "generate", spy)
    out = planner.plan_texts(captions, texts)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert len(seen) == 3  # two batches of the chat-templated prompts
    for model_input, caption, text in zip(seen, captions, texts):
        assert caption in model_input and text in model_input and "assistant:" in model_input
    assert planner.plan_texts(captions, texts) == out  # greedy
    assert planner.plan_texts(captions[2:], texts[2:]) == out[2:]  # batch- and padding-invariant
    assert out == [plan_line(a) for a in planner.answers(captions, texts)]
    assert planner.plan_texts([], []) == []
    with pytest.raises(ValueError, match="2 captions but 1"):
        planner.prompts(captions[:2], texts[:1])


def test_plan_line_picks_the_first_line_with_two_bars() -> None:
    plan = "a cat on a sofa | cat [10 20 50 60] | room"
    assert plan_line(f"Sure! Here is the plan:\n{plan}\nHope this helps | really") == plan
    assert plan_line(f"Answer: {plan}") == plan
    assert plan_line(f"  `{plan}`  ") == plan
    assert plan_line(f'"{plan}"') == plan
    assert plan_line(f"**Answer:** {plan}") == plan
    assert plan_line(f"{FORMAT_LINE}\n{plan}") == plan  # the format echoed back is skipped
    assert plan_line("a | b | c | d\n" + plan) == plan  # three bars: not a plan line
    assert plan_line("  no plan here\nat all  ") == "no plan here\nat all"
    assert plan_line("") == ""
    assert parse_plan(plan_line(f"Answer: {plan}.")).phrases == ["cat"]


# --------------------------------------------------------------------------- layout generator
def test_gligen_images_depend_only_on_plan_and_seed(components, images) -> None:
    generator = components[2]
    plans = [PLAN, OTHER, PLAN, EMPTY, PLAN]
    seeds = [1, 1, 2, 1, 1]
    refs = [images[0]] * 5
    out = generator.generate(plans, refs, seeds)
    assert out.shape == (5, SIZE, SIZE, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, generator.generate(plans, refs, seeds))  # same batches: bitwise
    np.testing.assert_array_equal(out[0], out[4])  # same plan, same seed
    # alone (batch of one) or in another order: the same image, up to batched float rounding
    for i in (0, 1, 3):
        alone = generator.generate([plans[i]], [refs[i]], [seeds[i]])[0]
        assert np.abs(alone.astype(int) - out[i]).max() <= 1, i
    reversed_ = generator.generate(plans[::-1], refs, seeds[::-1])[::-1]
    assert np.abs(reversed_.astype(int) - out).max() <= 1
    # another seed: other noise
    assert np.abs(out[2].astype(int) - out[0]).mean() > 5
    # the reference is ignored (text-box GLIGEN copies no appearance)
    np.testing.assert_array_equal(generator.generate([PLAN], [images[2]], [1])[0], out[0])
    assert generator.generate([], [], []).shape == (0, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="2 plans, 1 references and 2 seeds"):
        generator.generate([PLAN, PLAN], [images[0]], [1, 2])
    with pytest.raises(TypeError, match="not a Plan"):
        generator.generate([format_plan(PLAN)], [images[0]], [1])  # type: ignore[list-item]


def test_gligen_layout_reaches_the_image_and_an_empty_layout_is_text_to_image(components, images) -> None:
    from diffusers import StableDiffusionPipeline

    generator = components[2]
    grounded, empty = generator.generate([PLAN, EMPTY], [images[0]] * 2, [3, 3])
    # same description and seed: only the layout differs, through the gated layers
    assert np.abs(grounded.astype(int) - empty).max() >= 2
    # scheduled sampling with beta 0: the gated layers never run, the layout is ignored
    ungrounded = GligenLayoutGenerator(generator.folder, **{**GEN_OPTIONS, "scheduled_sampling_beta": 0.0})
    assert ungrounded.signature["scheduled_sampling_beta"] == 0.0
    np.testing.assert_array_equal(ungrounded.generate([PLAN], [images[0]], [3])[0], empty)
    # the empty layout is plain text-to-image by the same components (GLIGEN's frozen SD)
    pipe = generator.pipe
    plain = StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    plain.set_progress_bar_config(disable=True)
    reference = plain(
        EMPTY.description,
        num_inference_steps=2,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images
    np.testing.assert_array_equal((reference[0] * 255).round().clip(0, 255).astype(np.uint8), empty)
    # the gated layers are on again for the next grounded plan
    np.testing.assert_array_equal(generator.generate([PLAN], [images[0]], [3])[0], grounded)
    # a phrase longer than the tokenizer's context is cut to fit (the pipeline would fail on it)
    long = Plan("a cube", (LayoutObject("red " * 100, (0.1, 0.1, 0.9, 0.9)),))
    phrases, boxes, on = generator.layout(long)
    assert on and boxes == [[0.1, 0.1, 0.9, 0.9]]
    assert len(generator.pipe.tokenizer(phrases[0]).input_ids) <= generator.pipe.tokenizer.model_max_length
    assert generator.generate([long], [images[0]], [0]).shape == (1, SIZE, SIZE, 3)


def test_generator_settings_are_checked(dirs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps must be >= 1"):
        GligenLayoutGenerator(dirs["generator"], steps=0)
    with pytest.raises(ValueError, match="scheduled_sampling_beta"):
        GligenLayoutGenerator(dirs["generator"], scheduled_sampling_beta=1.5)
    with pytest.raises(ValueError, match="multiples of 8"):
        GligenLayoutGenerator(dirs["generator"], height=30, width=32)
    sd15 = save_sd15_pipeline(tmp_path / "sd15")  # a plain SD pipeline is not a GLIGEN one
    with pytest.raises(LocalModelNotFoundError, match="without GLIGEN's gated layers"):
        GligenLayoutGenerator(sd15)


# --------------------------------------------------------------------------- folder checks
def test_missing_folders_are_all_listed_before_torch_is_imported(tmp_path: Path) -> None:
    no_tokenizer = tmp_path / "blip2"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text("{}")
    sd = tmp_path / "sd15"
    (sd / "unet").mkdir(parents=True)
    (sd / "model_index.json").write_text("{}")
    (sd / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 768}))
    code = f"""
import json, sys
from cirlib.generation import LocalModelNotFoundError, MissingGeneratorFilesError, MissingIPCIRFilesError
from cirlib.generation import resolve_ipcir_files
results = []
for args in [({str(no_tokenizer)!r}, "Qwen/Qwen1.5-32B-Chat", {str(sd)!r}),
             ({str(tmp_path / "none")!r}, {str(tmp_path / "none")!r}, {str(tmp_path / "none")!r})]:
    try:
        resolve_ipcir_files(*args)
        results.append(None)
    except MissingIPCIRFilesError as err:
        results.append({{"problems": err.problems, "message": str(err),
                        "types": [isinstance(err, MissingGeneratorFilesError),
                                  isinstance(err, LocalModelNotFoundError), isinstance(err, FileNotFoundError)]}})
imported = [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]
print(json.dumps({{"results": results, "imported": imported}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    first, missing = result["results"]
    assert first["types"] == [True, True, True]
    assert first["message"].startswith("IP-CIR components: 3 missing input(s)")
    expected = [
        (
            "BLIP-2 captioner folder",
            str(no_tokenizer),
            "has no tokenizer.json or",
            "Salesforce/blip2-opt-2.7b",
        ),
        ("language model folder", "Qwen/Qwen1.5-32B-Chat", "does not exist", "not a hub id"),
        (
            "GLIGEN pipeline folder",
            str(sd),
            "attention_type 'default'",
            "masterful/gligen-1-4-generation-text-box",
        ),
    ]
    for problem, parts in zip(first["problems"], expected, strict=True):
        assert all(part in problem for part in parts), problem
        assert "huggingface-cli download" in problem
    assert len(missing["problems"]) == 3 and all("does not exist" in p for p in missing["problems"])


def test_gligen_folder_problems_name_what_is_wrong(tmp_path: Path) -> None:
    folder = tmp_path / "gligen"
    (folder / "unet").mkdir(parents=True)
    assert "has no model_index.json, unet/config.json" in gligen_problem(folder)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "config.json").write_text("{not json")
    assert "unreadable unet/config.json" in gligen_problem(folder)
    (folder / "unet" / "config.json").write_text(json.dumps({"attention_type": "gated-text-image"}))
    assert "text-image GLIGEN" in gligen_problem(folder)
    (folder / "unet" / "config.json").write_text(json.dumps({"attention_type": "gated"}))
    assert gligen_problem(folder) is None


def test_load_ipcir_components_checks_every_folder_first(dirs, tmp_path: Path) -> None:
    with pytest.raises(MissingIPCIRFilesError) as err:
        load_ipcir_components(dirs["captioner"], tmp_path / "llm", tmp_path / "gligen")
    assert isinstance(err.value, MissingGeneratorFilesError) and len(err.value.problems) == 2
    assert (
        str(tmp_path / "llm") in err.value.problems[0] and str(tmp_path / "gligen") in err.value.problems[1]
    )


# --------------------------------------------------------------------------- cirlib eval's options
def _cli_in_subprocess(args: list[str]) -> tuple[int, str, bool]:
    """Run `cirlib <args>` in a fresh interpreter; return (status, stderr, torch imported?)."""
    code = (
        "import sys; from cirlib.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr); sys.exit(rc)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    lines = out.stderr.strip().splitlines()
    return out.returncode, "\n".join(lines[:-1]), lines[-1] == "TORCH"


def test_cli_tiny_profile_runs_ipcir_and_planned_text_and_records_the_options(tmp_path, capsys) -> None:
    from cirlib.cli import main

    base = ["eval", "--benchmark", "cirr", "--n-queries", "8"]
    args = [*base, "--method", "ipcir", "--n-proxies", "1", "--lam", "0.5", "--out", str(tmp_path / "ipcir")]
    assert main(args) == 0
    assert "recall@1" in json.loads(capsys.readouterr().out)
    record = ipcir = json.loads((tmp_path / "ipcir" / "run.json").read_text())
    assert record["n_queries"] == 8 and (tmp_path / "ipcir" / "rankings.json").is_file()
    config = record["config"]
    assert (config["lam"], config["n_proxies"]) == (0.5, 1)
    # the options not given are recorded as they ran: the factory's defaults
    assert (config["ipcir_base"], config["proxy_feature"], config["combine"]) == (
        "planned-text",
        "robust",
        "balanced",
    )
    assert config["planner"] == "tiny" and config["captioner"] is None
    assert set(record["model"]["ipcir"]) == {"planning", "layout_generator"}

    args = [*base, "--method", "planned-text", "--planner", "oracle", "--out", str(tmp_path / "text")]
    assert main(args) == 0
    assert "recall@1" in json.loads(capsys.readouterr().out)
    record = json.loads((tmp_path / "text" / "run.json").read_text())
    assert record["config"]["planner"] == "oracle" and record["config"]["lam"] is None
    oracle = record["model"]["planned-text"]["planning"]["planner"]
    assert oracle != ipcir["model"]["ipcir"]["planning"]["planner"]  # the rule-based planner ran


def test_cli_paper_profile_lists_every_missing_folder_before_torch_is_imported(tmp_path: Path) -> None:
    base = ["eval", "--profile", "paper", "--benchmark", "circo", "--data", str(tmp_path / "CIRCO")]
    folders = {name: tmp_path / name for name in ("blip2", "qwen", "gligen")}
    rc, err, torch_imported = _cli_in_subprocess(
        [*base, "--method", "ipcir", "--captioner", str(folders["blip2"]), "--llm", str(folders["qwen"]),
         "--layout-generator", str(folders["gligen"]), "--lam", "0.3"]
    )  # fmt: skip
    assert rc == 2 and not torch_imported and err.count("\n") == 0
    # the components, the data folder and the CLIP weights: every missing input in one error
    assert err.startswith("cirlib eval: error: 3 problems: (1) IP-CIR components: 3 missing input(s)")
    assert f"(2) {tmp_path / 'CIRCO'}" in err or str(tmp_path / "CIRCO") in err.split("(2)")[1]
    assert "(3)" in err and "ViT-L-14-openai.safetensors" in err.split("(3)")[1]
    for what, name in (("BLIP-2 captioner folder", "blip2"), ("language model folder", "qwen"),
                       ("GLIGEN pipeline folder", "gligen")):  # fmt: skip
        assert f"{what}: '{folders[name]}' does not exist" in err
    assert "not a hub id" in err
    # planned-text draws nothing: the captioner and the language model only
    rc, err, torch_imported = _cli_in_subprocess(
        [*base, "--method", "planned-text", "--captioner", str(folders["blip2"]), "--llm", str(folders["qwen"])]
    )  # fmt: skip
    assert rc == 2 and not torch_imported and "IP-CIR components: 2 missing input(s)" in err
    assert str(folders["blip2"]) in err and str(folders["qwen"]) in err and "GLIGEN" not in err
    # folders not given at all: which options, and what belongs in each
    rc, err, torch_imported = _cli_in_subprocess([*base, "--method", "ipcir", "--llm", str(folders["qwen"])])
    assert rc == 2 and not torch_imported and err.count("\n") == 0
    assert "--method ipcir --profile paper needs --captioner DIR: a BLIP-2" in err
    assert "--layout-generator DIR: a text-box GLIGEN pipeline" in err and "--llm DIR" not in err


def test_cli_refuses_planning_options_of_another_method_or_profile(capsys) -> None:
    from cirlib.cli import main

    def error(*args: str) -> str:
        assert main(["eval", "--benchmark", "cirr", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("cirlib eval: error: ")
        return err.removeprefix("cirlib eval: error: ")

    assert (
        error("--method", "sum", "--lam", "0.5")
        == "--lam is an option of --method ipcir only, not of --method sum"
    )
    assert error("--method", "cig", "--planner", "oracle") == (
        "--planner is an option of --method planned-text or ipcir only, not of --method cig"
    )
    assert error("--method", "planned-text", "--n-proxies", "2", "--combine", "weighted") == (
        "--n-proxies, --combine are options of --method ipcir only, not of --method planned-text"
    )
    assert error("--method", "ipcir", "--fusion-weight", "0.5", "--generation-steps", "2") == (
        "--fusion-weight, --generation-steps are options of --method cig only, not of --method ipcir"
    )
    assert error("--method", "ipcir", "--captioner", "blip2").startswith(
        "--captioner is for the paper profile's models"
    )
    paper = ["--profile", "paper", "--captioner", "a", "--llm", "b"]
    assert error("--method", "planned-text", *paper, "--planner", "oracle").startswith(
        "--planner is for the tiny profile"
    )
    assert "--ipcir-base lincir is not available in the tiny profile" in error(
        "--method", "ipcir", "--ipcir-base", "lincir"
    )
    assert "--ipcir-base cig is not available in the paper profile" in error(
        "--method", "ipcir", *paper, "--layout-generator", "c", "--ipcir-base", "cig"
    )
    assert error("--method", "ipcir", "--lam", "1.5").startswith("--lam must be a number in [0, 1]")
    assert error("--method", "ipcir", "--n-proxies", "0") == "--n-proxies must be a whole number >= 1, not 0"
    assert main(["eval", "--benchmark", "cirr", "--method", "ipcir", "--combine", "mean"]) == 2
    assert "invalid choice: 'mean'" in capsys.readouterr().err  # argparse's choices


def test_only_the_planning_options_given_reach_build_method(monkeypatch, tmp_path: Path) -> None:
    import cirlib.methods
    from cirlib.run import EvalConfig, build, check_method_options

    seen: dict[str, dict] = {}

    class Stop(Exception):
        pass

    def fake_build_method(name: str, profile: str, **options):
        seen[name] = options
        raise Stop

    monkeypatch.setattr(cirlib.methods, "build_method", fake_build_method)
    with pytest.raises(Stop):
        build(EvalConfig(benchmark="cirr", method="ipcir", lam=0.0, ipcir_base="searle"))
    assert seen["ipcir"] == {"lam": 0.0, "base": "searle"}  # the rest: the factory's defaults
    with pytest.raises(Stop):
        build(EvalConfig(benchmark="cirr", method="planned-text", planner="oracle"))
    assert seen["planned-text"] == {"planner": "oracle"}
    paper = EvalConfig(
        benchmark="circo", method="ipcir", profile="paper", device="cpu", captioner=tmp_path / "b",
        llm=tmp_path / "l", layout_generator=tmp_path / "g", n_proxies=2, proxy_feature="raw", combine="weighted",
    )  # fmt: skip
    check_method_options(paper)
    with pytest.raises(Stop):
        build(paper)
    options = seen["ipcir"]
    assert {k: options[k] for k in ("captioner", "llm", "layout_generator")} == {
        "captioner": tmp_path / "b",
        "llm": tmp_path / "l",
        "layout_generator": tmp_path / "g",
    }
    assert (options["n_proxies"], options["proxy_feature"], options["combine"]) == (2, "raw", "weighted")
    assert "lam" not in options and "planner" not in options and options["form"] == "circo"


def test_the_torch_free_option_lists_match_the_methods() -> None:
    import cirlib.methods
    import cirlib.methods.ipcir
    import cirlib.run
    from cirlib.cli import build_parser

    assert cirlib.run.PLANNERS == cirlib.methods.PLANNERS
    assert cirlib.run.IPCIR_BASES == cirlib.methods.IPCIR_BASES
    assert cirlib.run.PROXY_FEATURES == cirlib.methods.ipcir.PROXY_FEATURES
    assert cirlib.run.COMBINES == cirlib.methods.ipcir.COMBINES
    for profile, excluded in cirlib.run.IPCIR_BASES_NOT_IN.items():
        usable = {b for b in cirlib.run.IPCIR_BASES if b not in excluded} - {"planned-text"}
        assert usable <= set(cirlib.methods.list_methods(profile)), profile
    assert "lincir" not in cirlib.methods.list_methods("tiny")
    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]  # type: ignore[union-attr]
    choices = {a.dest: a.choices for a in eval_parser._actions if a.choices}
    assert tuple(choices["ipcir_base"]) == cirlib.methods.IPCIR_BASES
    assert tuple(choices["planner"]) == cirlib.methods.PLANNERS
    assert set(choices["proxy_feature"]) == set(cirlib.methods.ipcir.PROXY_FEATURES)
    assert set(choices["combine"]) == set(cirlib.methods.ipcir.COMBINES)
