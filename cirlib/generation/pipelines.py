"""Local diffusion, captioning and language models for the paper profile, built from folders only.

The generative ZS-CIR methods need three kinds of pretrained models: a text-to-image diffusion model
(CIG: SDXL with a fine-tuned UNet and the fp16-fix VAE; IP-CIR: an SD 1.x backbone), an image
captioner (BLIP-2, as LDRE / CIReVL / IP-CIR caption images) and an instruction-following LLM (IP-CIR's
layouts, LDRE's edits). cirlib never downloads them: every loader takes a local folder (a model saved
with ``save_pretrained``, or downloaded with ``huggingface-cli download REPO --local-dir DIR``), checks
that it exists and holds the expected index file before importing diffusers or transformers, and loads
it with ``local_files_only=True``. A hub id given as a path therefore fails with
:class:`LocalModelNotFoundError` naming what should be there, instead of downloading.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cirlib.generation.files import (
    CAPTIONER_UPSTREAM,
    LLM_UPSTREAM,
    SD_UPSTREAM,
    TOKENIZER_FILES,
    UNET_UPSTREAM,
    VAE_UPSTREAM,
    LocalModelNotFoundError,
    local_dir,
    unet_folder,
)


# --------------------------------------------------------------------------- diffusion
def load_sd_pipeline(
    path: str | Path,
    kind: Literal["sd15", "sdxl"],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    unet: str | Path | None = None,
    vae: str | Path | None = None,
    progress: bool = False,
) -> Any:
    """A diffusers ``StableDiffusionPipeline`` (``kind="sd15"``) or ``StableDiffusionXLPipeline``
    (``"sdxl"``) from the local pipeline folder ``path`` (with ``model_index.json``).

    ``unet`` / ``vae`` replace the pipeline's components with local ``UNet2DConditionModel`` /
    ``AutoencoderKL`` folders, as CIG does (its fine-tuned UNet from ``{model_path}/unet``, given
    either as that folder or as ``model_path`` itself, and ``madebyollin/sdxl-vae-fp16-fix``)."""
    if kind not in SD_UPSTREAM:
        raise ValueError(f"kind must be one of {', '.join(SD_UPSTREAM)}, got {kind!r}")
    label = "SDXL" if kind == "sdxl" else "Stable Diffusion 1.x"
    folder = local_dir(path, f"{label} pipeline folder", SD_UPSTREAM[kind], required=("model_index.json",))
    unet_dir = vae_dir = None
    if unet is not None:
        unet_dir = local_dir(unet_folder(unet), "UNet folder", UNET_UPSTREAM, required=("config.json",))
    if vae is not None:
        vae_dir = local_dir(vae, "VAE folder", VAE_UPSTREAM, required=("config.json",))

    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if unet_dir is not None:
        kwargs["unet"] = UNet2DConditionModel.from_pretrained(unet_dir, local_files_only=True, dtype=dtype)
    if vae_dir is not None:
        kwargs["vae"] = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True, dtype=dtype)
    if kind == "sd15":
        # No safety checker: it replaces any image it flags with a black one, which would silently
        # corrupt the pseudo-target images used as retrieval proxies (CIG even rejects near-black
        # images and re-seeds), SDXL pipelines have none, so both kinds behave alike, and it would be
        # one more model (a CLIP) to fetch. These images are retrieval features, never shown as output.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
        cls = StableDiffusionPipeline
    else:
        # No invisible watermark: it perturbs the pixels (DWT-DCT) depending on whether the optional
        # invisible-watermark package happens to be installed; proxies must not depend on that.
        kwargs.update(add_watermarker=False)
        cls = StableDiffusionXLPipeline
    pipe = cls.from_pretrained(folder, **kwargs)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)


# --------------------------------------------------------------------------- captioning
def load_captioner(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """``(Blip2Processor, Blip2ForConditionalGeneration)`` from the local folder ``path`` (model,
    image processor and tokenizer saved together), the model in eval mode on ``device``."""
    folder = local_dir(
        path,
        "BLIP-2 captioner folder",
        CAPTIONER_UPSTREAM,
        required=("config.json",),
        any_of=TOKENIZER_FILES,
    )
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    processor = Blip2Processor.from_pretrained(folder, local_files_only=True)
    model = Blip2ForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
    return processor, model.to(device).eval()


def _pil_images(images: Sequence[Any]) -> list[Any]:
    from PIL import Image

    out = []
    for im in images:
        if isinstance(im, np.ndarray):
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"expected a uint8 image [H,W,3], got dtype {im.dtype} shape {im.shape}")
            im = Image.fromarray(im)
        out.append(im.convert("RGB"))
    return out


def _strip_prefix(out: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """The generated part of ``out``: decoder-only ``generate`` returns the prompt ids first."""
    n = prefix.shape[1]
    if out.shape[1] >= n and torch.equal(out[:, :n].cpu(), prefix.cpu()):
        return out[:, n:]
    return out


def caption_images(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    prompt: str | None = None,
    max_new_tokens: int = 30,
    *,
    batch_size: int = 8,
    num_captions: int = 1,
    do_sample: bool = False,
    seed: int = 0,
    **generate_kwargs: Any,
) -> list[str]:
    """Captions of ``images`` (PIL images or uint8 ``[H,W,3]`` arrays), ``num_captions`` per image,
    image-major: greedy by default; ``do_sample`` with ``seed`` for several diverse captions (IP-CIR
    uses 15 BLIP-2 captions per image). ``prompt`` (e.g. "Question: what is in the image? Answer:") conditions the
    language model; only the generated text is returned, stripped."""
    if num_captions > 1 and not do_sample and "num_beams" not in generate_kwargs:
        raise ValueError("num_captions > 1 needs do_sample=True (or num_beams >= num_captions)")
    pil = _pil_images(images)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    torch.manual_seed(seed)
    out_texts: list[str] = []
    for start in range(0, len(pil), batch_size):
        batch = pil[start : start + batch_size]
        texts = None if prompt is None else [prompt] * len(batch)
        inputs = processor(images=batch, text=texts, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                num_return_sequences=num_captions,
                **generate_kwargs,
            )
        if "input_ids" in inputs:
            prefix = inputs["input_ids"].repeat_interleave(num_captions, dim=0)
        else:  # generate starts from the image tokens and BOS
            cfg = model.config
            start_ids = [cfg.image_token_index] * cfg.num_query_tokens + [cfg.text_config.bos_token_id]
            prefix = torch.tensor([start_ids]).expand(out.shape[0], -1)
        out = _strip_prefix(out, prefix)
        out_texts += [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]
    return out_texts


# --------------------------------------------------------------------------- language models
def load_llm(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """``(tokenizer, AutoModelForCausalLM)`` from the local folder ``path``, the model in eval mode on
    ``device``; the tokenizer pads on the left (batched generation) and pads with EOS if it has no pad
    token."""
    folder = local_dir(
        path, "language model folder", LLM_UPSTREAM, required=("config.json",), any_of=TOKENIZER_FILES
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    return tokenizer, model.to(device).eval()


def generate_text(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    seed: int = 0,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    system: str | None = None,
    chat: bool | None = None,
    batch_size: int = 8,
) -> list[str]:
    """One completion per prompt (only the new text, stripped). Greedy unless ``do_sample``; the
    prompts go through the tokenizer's chat template (as user messages, after an optional ``system``
    message) when it has one, unless ``chat=False``. The same prompts, batch size and seed give the
    same texts on the same machine."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    use_chat = tokenizer.chat_template is not None if chat is None else chat
    if use_chat and tokenizer.chat_template is None:
        raise ValueError("chat=True but this tokenizer has no chat template")
    texts = []
    for p in prompts:
        if use_chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": p}
            ]
            texts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        else:
            texts.append(p if system is None else f"{system}\n{p}")
    device = next(model.parameters()).device
    sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    out_texts: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            # A chat template writes its own special tokens (BOS...), so none are added again.
            enc = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=not use_chat,
            ).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad_id, **sampling
                )
            new = out[:, enc["input_ids"].shape[1] :]
            out_texts += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return out_texts


__all__ = [
    "CAPTIONER_UPSTREAM",
    "LLM_UPSTREAM",
    "SD_UPSTREAM",
    "LocalModelNotFoundError",
    "caption_images",
    "generate_text",
    "load_captioner",
    "load_llm",
    "load_sd_pipeline",
]
