"""IP-CIR's imagination chain, paper profile: BLIP-2 captions, an instruction LLM plans, GLIGEN draws.

IP-CIR ("Imagine and Seek", CVPR 2025) captions the reference image with BLIP-2, asks an instruction
LLM (Qwen1.5-32B, GPTQ-Int4 recommended) to read the caption(s) and the modification text and write
the target's description and layout (objects with boxes), and draws proxy images from that layout
with MIGC + ELITE on SD 1.5 (Realistic Vision V6; 50 steps, guidance 7.5, 5 proxies per query, a
random seed per image). This module gives the three roles of :mod:`cirlib.generation.layout` over
local models:

* :class:`Blip2Captioner` (:class:`~cirlib.generation.layout.Captioner`): one greedy BLIP-2 caption
  per image (:func:`~cirlib.generation.pipelines.caption_images`). IP-CIR's retrieval side reuses
  LDRE's 15 sampled captions per image; the planner here reads one caption.
* :class:`LLMPlanner` (:class:`~cirlib.generation.layout.Planner`): a causal LM prompted with
  :data:`IPCIR_PLAN_PROMPT` to answer in the one-line plan form of
  :func:`~cirlib.generation.layout.format_plan`, decoded greedily. The official prompt (read from
  ``prompt/prompt_layout_v2.yaml`` of the ``ooongs/Imagine-and-Seek`` fork; that upstream's
  ``generate_layout.py`` uses the same text is UNVERIFIED) asks for step-by-step reasoning and
  ``[## bbox: x1, y1, x2, y2 ##]`` fields with a scene, a category, a size and a reference modality
  per instance; ours asks for the plan line directly, so that :func:`~cirlib.generation.layout.parse_plan`
  reads it and its validity can be counted.
* :class:`GligenLayoutGenerator` (:class:`~cirlib.generation.layout.LayoutGenerator`): diffusers'
  text-box GLIGEN (``StableDiffusionGLIGENPipeline``, SD 1.4 with gated self-attention layers fed by
  phrase + box tokens), the diffusers stand-in for MIGC. Prompt = the plan's description, one
  grounding phrase and box per layout object, 50 steps, guidance 7.5, GLIGEN's scheduled sampling
  (grounding in the first 30% of the steps), and one ``torch.Generator`` per image seeded by the
  caller (IP-CIR draws a random seed per image, so its proxies cannot be regenerated).

  *The reference image is accepted and ignored.* MIGC + ELITE copy the reference's appearance into
  the proxy (ELITE maps the reference object into word embeddings); GLIGEN text-box only follows
  text and boxes, so the proxy keeps the reference's content only as far as the caption and the
  plan describe it.

  *A plan without layout objects* is drawn as plain text-to-image by the same pipeline: the
  diffusers GLIGEN pipeline cannot take an empty layout (it indexes the phrase features and fails),
  so such a plan is sampled with the gated layers switched off for every step (scheduled sampling
  with beta 0) and a placeholder phrase, which then reaches nothing. GLIGEN freezes the SD 1.4
  weights and only adds the gated layers, so this is SD 1.4 text-to-image from the description
  (the test checks it equals ``StableDiffusionPipeline`` over the same components). The alternative,
  gated layers on with only GLIGEN's learned null grounding tokens (its classifier-free-guidance
  negative input), is not reachable through the pipeline and would condition on "no object" rather
  than on nothing.

:func:`resolve_ipcir_files` (in :mod:`cirlib.generation.files`, no torch) checks the three folders
and lists every problem at once; :func:`load_ipcir_components` checks them, then loads all three.
Nothing is downloaded: every loader reads a local folder with ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cirlib.generation.files import (
    GLIGEN_UPSTREAM,
    IPCIRFiles,
    MissingIPCIRFilesError,
    gligen_dir,
    resolve_ipcir_files,
)
from cirlib.generation.layout import LayoutObject, Plan, format_plan
from cirlib.generation.pipelines import caption_images, generate_text, load_captioner, load_llm

log = logging.getLogger("cirlib.generation.paper_ipcir")

#: Files up to this size are hashed whole in a folder digest (configs, tokenizers); larger ones
#: (weights) by name and size only, so that a signature never reads gigabytes.
_HASH_LIMIT = 16 << 20


# --------------------------------------------------------------------------- content identity
def folder_digest(folder: str | Path) -> str:
    """sha256 of a saved model folder's content, independent of where it lies: every file (hidden
    ones aside: ``huggingface-cli download`` keeps its bookkeeping under ``.cache``) by relative
    path and size, and the bytes of every file up to 16 MiB (``config.json``, ``model_index.json``,
    tokenizer and scheduler files). Replacing a config or tokenizer, or a weights file by one of
    another size, changes it."""
    root = Path(folder).expanduser()
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        size = path.stat().st_size
        h.update(f"{rel.as_posix()}\0{size}\0".encode())
        if size <= _HASH_LIMIT:
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _runtime(model: Any, device: torch.device) -> dict[str, Any]:
    import transformers

    out = {
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": device.type,  # greedy decoding and noise differ between CPU and CUDA kernels
        "versions": {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__},
    }
    return out


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- captioner
class Blip2Captioner:
    """:class:`~cirlib.generation.layout.Captioner` over a local BLIP-2 folder (model, image
    processor and tokenizer saved together, e.g. ``Salesforce/blip2-opt-2.7b``): one greedy caption
    per image, ``prompt`` (e.g. ``"Question: what is in the image? Answer:"``) optionally
    conditioning the language model, ``batch_size`` images at a time (greedy: the captions do not
    depend on the batch)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        prompt: str | None = None,
        max_new_tokens: int = 30,
        batch_size: int = 8,
    ) -> None:
        if int(max_new_tokens) < 1 or int(batch_size) < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}"
            )
        self.processor, self.model = load_captioner(folder, device=device, dtype=dtype)  # checks the folder
        self.folder = Path(folder).expanduser()
        self.prompt, self.max_new_tokens, self.batch_size = prompt, int(max_new_tokens), int(batch_size)
        self.signature: dict[str, Any] = {
            "captioner": "blip2",
            "folder": folder_digest(self.folder),
            "prompt": self.prompt,
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
            **_runtime(self.model, _device_of(self.model)),
        }
        json.dumps(self.signature)

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """One caption per uint8 ``[H, W, 3]`` image (only the generated text, stripped)."""
        images = list(images)
        if not images:
            return []
        return caption_images(
            self.model,
            self.processor,
            images,
            prompt=self.prompt,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )

    def __repr__(self) -> str:
        return f"Blip2Captioner({str(self.folder)!r}, prompt={self.prompt!r}, max_new_tokens={self.max_new_tokens})"


# --------------------------------------------------------------------------- planner
#: The two worked examples of :data:`IPCIR_PLAN_PROMPT`: (reference caption, modification text, plan).
IPCIR_PLAN_EXAMPLES: tuple[tuple[str, str, Plan], ...] = (
    (
        "a brown dog lying on a sofa",
        "replace the dog with two cats and make the sofa red",
        Plan(
            "two cats lying on a red sofa",
            (
                LayoutObject("cat", (0.10, 0.35, 0.45, 0.70)),
                LayoutObject("cat", (0.50, 0.30, 0.88, 0.68)),
                LayoutObject("red sofa", (0.00, 0.40, 1.00, 1.00)),
            ),
            "living room",
        ),
    ),
    (
        "a man riding a bicycle on a city street",
        "is at the beach and holds a surfboard instead of riding",
        Plan(
            "a man standing on a sandy beach holding a surfboard",
            (
                LayoutObject("man", (0.30, 0.15, 0.60, 0.95)),
                LayoutObject("surfboard", (0.55, 0.10, 0.75, 0.90)),
            ),
            "sandy beach with the sea",
        ),
    ),
)


#: The answer format as the prompt states it (a line :func:`plan_line` never picks).
FORMAT_LINE = "target description | phrase [x0 y0 x1 y1] ; phrase [x0 y0 x1 y1] | background"


def _plan_prompt(examples: Sequence[tuple[str, str, Plan]]) -> str:
    shots = "\n\n".join(
        f"Example {i}\nReference caption: {caption}\nModification: {text}\nAnswer: {format_plan(plan)}"
        for i, (caption, text, plan) in enumerate(examples, 1)
    )
    return (
        "You imagine the target image of an image search. You are given a caption of a reference image "
        "and a modification text that says how the target image differs from the reference image. "
        "Imagine the target image and answer with one line in exactly this format:\n"
        f"{FORMAT_LINE}\n"
        "- target description: one sentence describing the whole target image (the reference image "
        "with the modification applied).\n"
        "- then the layout: every object seen in the target image, each as a short phrase followed "
        "by its bounding box in square brackets, objects separated by ' ; '. A box is four integers "
        "x0 y0 x1 y1: the left, top, right and bottom edges in percent of the image width and height "
        "(0 to 100, y grows downwards, x0 < x1 and y0 < y1). One box per object: two cats are two "
        "objects.\n"
        "- background: a few words for the scene behind the objects (may be empty).\n"
        "Separate the three parts with ' | '. Write nothing else: no explanation, no list, no quotes.\n"
        "\n"
        f"{shots}\n"
        "\n"
        "Now the query\n"
        "Reference caption: {caption}\n"
        "Modification: {text}\n"
        "Answer:"
    )


#: The planner's prompt: the task, the exact answer format of
#: :func:`~cirlib.generation.layout.format_plan` (description | phrase [x0 y0 x1 y1] ; ... |
#: background, boxes in integer percent) and :data:`IPCIR_PLAN_EXAMPLES` written by ``format_plan``
#: itself; ``{caption}`` and ``{text}`` are replaced by the query's (plain replacement, so braces in a
#: caption are harmless). With a chat model it is the user message (its chat template applies).
IPCIR_PLAN_PROMPT = _plan_prompt(IPCIR_PLAN_EXAMPLES)

_ANSWER_LABELS = ("answer:", "target:", "plan:")


def plan_line(answer: str) -> str:
    """The plan line of an LLM answer: the first line with exactly two ``|`` (stripped, without
    wrapping backticks or quotes and without a leading ``Answer:`` label, which chat models tend to
    echo from the examples; :data:`FORMAT_LINE` echoed back is skipped), else the whole answer
    stripped. Whether it is a valid plan is for
    :func:`~cirlib.generation.layout.parse_plan` to say."""
    for line in answer.splitlines():
        if line.count("|") != 2:
            continue
        line = line.strip().strip("`").strip()
        for label in _ANSWER_LABELS:  # also markdown-bold: **Answer:** ...
            if line.lstrip("*").lower().startswith(label):
                line = line.lstrip("*")[len(label) :].lstrip("*").strip()
                break
        if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'":
            line = line[1:-1].strip()
        if line == FORMAT_LINE:  # the format echoed back
            continue
        return line
    return answer.strip()


class LLMPlanner:
    """:class:`~cirlib.generation.layout.Planner` over a local causal LM folder (e.g.
    ``Qwen/Qwen1.5-32B-Chat``, IP-CIR's): each (caption, modification text) fills ``prompt`` (default
    :data:`IPCIR_PLAN_PROMPT`), the model answers greedily (deterministic; through its chat template
    when the tokenizer has one), ``batch_size`` prompts at a time, and :func:`plan_line` picks the plan
    line of the answer."""

    def __init__(
        self,
        folder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_new_tokens: int = 256,
        batch_size: int = 4,
        prompt: str = IPCIR_PLAN_PROMPT,
    ) -> None:
        if "{caption}" not in prompt or "{text}" not in prompt:
            raise ValueError("the planner prompt must contain '{caption}' and '{text}'")
        if int(max_new_tokens) < 1 or int(batch_size) < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}"
            )
        self.tokenizer, self.model = load_llm(folder, device=device, dtype=dtype)  # checks the folder
        self.folder = Path(folder).expanduser()
        self.prompt, self.max_new_tokens, self.batch_size = prompt, int(max_new_tokens), int(batch_size)
        self.chat = self.tokenizer.chat_template is not None
        self.signature: dict[str, Any] = {
            "planner": "llm",
            "folder": folder_digest(self.folder),
            "prompt": self.prompt,
            "chat_template": self.chat,
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
            "answer": "first line with two '|'",
            **_runtime(self.model, _device_of(self.model)),
        }
        json.dumps(self.signature)

    def prompts(self, captions: Sequence[str], texts: Sequence[str]) -> list[str]:
        """The prompt of each (caption, modification text) pair."""
        if isinstance(captions, str) or isinstance(texts, str):
            raise TypeError("captions and texts must be lists of strings, not strings")
        if len(captions) != len(texts):
            raise ValueError(f"{len(captions)} captions but {len(texts)} modification texts")
        return [
            self.prompt.replace("{caption}", str(c).strip()).replace("{text}", str(t).strip())
            for c, t in zip(captions, texts)
        ]

    def answers(self, captions: Sequence[str], texts: Sequence[str]) -> list[str]:
        """The model's whole answer (stripped) to each prompt."""
        prompts = self.prompts(captions, texts)
        if not prompts:
            return []
        return generate_text(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            do_sample=False,
        )

    def plan_texts(self, captions: Sequence[str], texts: Sequence[str]) -> list[str]:
        """The plan line (:func:`plan_line`) of the answer to each (caption, modification text)."""
        return [plan_line(a) for a in self.answers(captions, texts)]

    def __repr__(self) -> str:
        return f"LLMPlanner({str(self.folder)!r}, max_new_tokens={self.max_new_tokens}, chat={self.chat})"


# --------------------------------------------------------------------------- layout generator
#: The grounding phrase and box given to the pipeline for a plan without objects; the gated layers
#: are off then, so they reach nothing (see the module docstring).
EMPTY_LAYOUT_PHRASE = ""
EMPTY_LAYOUT_BOX = (0.0, 0.0, 1.0, 1.0)
#: The most objects the diffusers GLIGEN pipeline grounds (it keeps the first 30, with a warning).
GLIGEN_MAX_OBJECTS = 30


def _to_uint8(images: Any) -> np.ndarray:
    # As diffusers' numpy_to_pil; a NaN (fp16 VAE overflow) becomes black.
    return (np.nan_to_num(np.asarray(images, dtype=np.float32)) * 255).round().clip(0, 255).astype(np.uint8)


class GligenLayoutGenerator:
    """:class:`~cirlib.generation.layout.LayoutGenerator` over a local text-box GLIGEN pipeline
    folder (``masterful/gligen-1-4-generation-text-box`` saved locally, or any
    ``StableDiffusionGLIGENPipeline`` folder whose UNet has ``attention_type="gated"``).

    Each plan is drawn with prompt = ``plan.description``, ``gligen_phrases`` = ``plan.phrases`` and
    ``gligen_boxes`` = its boxes (``[x0, y0, x1, y1]`` in [0, 1]), ``steps`` DDIM/PNDM steps (the
    folder's scheduler), ``guidance_scale`` and ``scheduled_sampling_beta`` (the gated layers run in
    the first ``int(beta * steps)`` steps, GLIGEN's scheduled sampling), noise from
    ``torch.Generator(device).manual_seed(seed)`` per image. A plan without objects is drawn as plain
    text-to-image (gated layers off; module docstring). ``height`` / ``width`` default to the
    pipeline's (``unet.config.sample_size * vae_scale_factor``: 512 for GLIGEN 1.4).

    The pipeline grounds one layout per call, shared by the whole batch, so a batch holds plans with
    the same layout (the proxies of one query, which differ only by seed), at most ``batch_size``; an
    image depends only on (plan, seed), up to the float rounding of batched kernels. Grounding phrases
    longer than the tokenizer's context are cut to it (the pipeline would fail on them); past 30
    objects only the first 30 are grounded (the pipeline's limit). No safety checker (it would
    black out flagged proxies, as for :func:`~cirlib.generation.pipelines.load_sd_pipeline`) and no
    negative prompt."""

    def __init__(
        self,
        folder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        steps: int = 50,
        guidance_scale: float = 7.5,
        scheduled_sampling_beta: float = 0.3,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 1,
        progress: bool = False,
    ) -> None:
        for name, value in (("steps", steps), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= float(scheduled_sampling_beta) <= 1.0:
            raise ValueError(f"scheduled_sampling_beta must lie in [0, 1], got {scheduled_sampling_beta}")
        self.folder = gligen_dir(folder)  # before diffusers is imported
        from diffusers import StableDiffusionGLIGENPipeline

        pipe = StableDiffusionGLIGENPipeline.from_pretrained(
            self.folder,
            local_files_only=True,
            dtype=dtype,
            safety_checker=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        self.device = torch.device(getattr(self.pipe, "_execution_device", None) or self.pipe.device)
        default = int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)
        self.height = int(height) if height is not None else default
        self.width = int(width) if width is not None else default
        if self.height % 8 or self.width % 8 or self.height < 8 or self.width < 8:
            raise ValueError(
                f"height and width must be positive multiples of 8, got {self.height}x{self.width}"
            )
        self.steps, self.guidance_scale = int(steps), float(guidance_scale)
        self.scheduled_sampling_beta = float(scheduled_sampling_beta)
        self.batch_size, self.progress = int(batch_size), progress
        if self.scheduled_sampling_beta > 0 and int(self.scheduled_sampling_beta * self.steps) == 0:
            log.warning(
                "GLIGEN grounds int(beta * steps) = int(%s * %s) = 0 steps: the layout is ignored",
                self.scheduled_sampling_beta,
                self.steps,
            )
        import diffusers

        self.signature: dict[str, Any] = {
            "generator": "ipcir-gligen",
            "folder": folder_digest(self.folder),
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "scheduled_sampling_beta": self.scheduled_sampling_beta,
            "height": self.height,
            "width": self.width,
            "scheduler": type(self.pipe.scheduler).__name__,
            "negative_prompt": None,
            "empty_layout": "text-to-image (gated layers off)",
            "reference": "ignored",
            **_runtime(self.pipe.unet, self.device),
        }
        self.signature["versions"]["diffusers"] = diffusers.__version__
        json.dumps(self.signature)

    # ----------------------------------------------------------------- helpers
    def _phrase(self, phrase: str) -> str:
        tok = self.pipe.tokenizer
        if len(tok(phrase).input_ids) <= tok.model_max_length:
            return phrase
        ids = tok(
            phrase, truncation=True, max_length=tok.model_max_length, add_special_tokens=False
        ).input_ids
        return tok.decode(ids[: tok.model_max_length - 2], skip_special_tokens=True).strip()

    def layout(self, plan: Plan) -> tuple[list[str], list[list[float]], bool]:
        """``(gligen_phrases, gligen_boxes, grounded)`` for ``plan``; an empty layout gives the
        placeholder phrase and box with ``grounded`` False."""
        if not plan.objects:
            return [EMPTY_LAYOUT_PHRASE], [list(EMPTY_LAYOUT_BOX)], False
        objects = plan.objects[:GLIGEN_MAX_OBJECTS]  # as the pipeline would, without its warning per call
        phrases = [self._phrase(o.phrase) for o in objects]
        boxes = [[float(v) for v in o.box] for o in objects]
        return phrases, boxes, True

    def _sample(
        self,
        prompts: list[str],
        phrases: list[str],
        boxes: list[list[float]],
        grounded: bool,
        seeds: list[int],
    ) -> np.ndarray:
        images = self.pipe(
            prompt=prompts,
            height=self.height,
            width=self.width,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            gligen_scheduled_sampling_beta=self.scheduled_sampling_beta if grounded else 0.0,
            gligen_phrases=phrases,
            gligen_boxes=boxes,
            generator=[torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds],
            output_type="np",
        ).images
        return _to_uint8(images)

    # ----------------------------------------------------------------- the protocol
    def generate(
        self, plans: Sequence[Plan], references: Sequence[np.ndarray], seeds: Sequence[int]
    ) -> np.ndarray:
        """uint8 images ``[N, height, width, 3]``: plan ``i`` drawn with noise seed ``seeds[i]``.
        ``references`` (one per plan) are ignored: text-box GLIGEN does not copy appearance."""
        plans, seeds = list(plans), [int(s) for s in seeds]
        if not len(plans) == len(references) == len(seeds):
            raise ValueError(
                f"{len(plans)} plans, {len(references)} references and {len(seeds)} seeds differ in number"
            )
        for i, plan in enumerate(plans):
            if not isinstance(plan, Plan):
                raise TypeError(
                    f"plan {i} is a {type(plan).__name__}, not a Plan (parse_plan reads plan text)"
                )
        out = np.zeros((len(plans), self.height, self.width, 3), dtype=np.uint8)
        # one layout per pipeline call: group the plans by layout, in order of first appearance
        groups: dict[str, list[int]] = {}
        layouts = [self.layout(p) for p in plans]
        for i, layout in enumerate(layouts):
            groups.setdefault(json.dumps(layout), []).append(i)
        batches = [
            idx[start : start + self.batch_size]
            for idx in groups.values()
            for start in range(0, len(idx), self.batch_size)
        ]
        from cirlib.config import progress_bar

        with torch.inference_mode():
            for batch in progress_bar(
                batches, desc="generate (GLIGEN)", show=self.progress and len(batches) > 1
            ):
                phrases, boxes, grounded = layouts[batch[0]]
                prompts = [plans[i].description for i in batch]
                out[batch] = self._sample(prompts, phrases, boxes, grounded, [seeds[i] for i in batch])
        return out

    def __repr__(self) -> str:
        return (
            f"GligenLayoutGenerator({str(self.folder)!r}, steps={self.steps}, guidance_scale={self.guidance_scale}, "
            f"scheduled_sampling_beta={self.scheduled_sampling_beta}, size={self.height}x{self.width})"
        )


# --------------------------------------------------------------------------- loading
def load_ipcir_components(
    captioner: str | Path,
    llm: str | Path,
    generator: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    captioner_options: dict[str, Any] | None = None,
    planner_options: dict[str, Any] | None = None,
    generator_options: dict[str, Any] | None = None,
) -> tuple[Blip2Captioner, LLMPlanner, GligenLayoutGenerator]:
    """IP-CIR's captioner, planner and layout generator from three local folders (BLIP-2, a causal
    LM, a text-box GLIGEN pipeline), all on ``device`` in ``dtype``. Every folder is checked first
    (:func:`resolve_ipcir_files`): all problems raise one :class:`MissingIPCIRFilesError` before
    anything is loaded. ``*_options`` go to the constructors (e.g. ``{"steps": 25}``)."""
    files: IPCIRFiles = resolve_ipcir_files(captioner, llm, generator)
    assert files.generator is not None  # a generator folder was given, so it was checked
    return (
        Blip2Captioner(files.captioner, device=device, dtype=dtype, **(captioner_options or {})),
        LLMPlanner(files.llm, device=device, dtype=dtype, **(planner_options or {})),
        GligenLayoutGenerator(files.generator, device=device, dtype=dtype, **(generator_options or {})),
    )


__all__ = [
    "EMPTY_LAYOUT_BOX",
    "EMPTY_LAYOUT_PHRASE",
    "FORMAT_LINE",
    "GLIGEN_MAX_OBJECTS",
    "GLIGEN_UPSTREAM",
    "IPCIR_PLAN_EXAMPLES",
    "IPCIR_PLAN_PROMPT",
    "Blip2Captioner",
    "GligenLayoutGenerator",
    "IPCIRFiles",
    "LLMPlanner",
    "MissingIPCIRFilesError",
    "folder_digest",
    "load_ipcir_components",
    "plan_line",
    "resolve_ipcir_files",
]
