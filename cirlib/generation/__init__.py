"""Generative models of the paper profile (diffusion, captioning, LLM), loaded from local folders only.

See :mod:`cirlib.generation.pipelines`.
"""

from cirlib.generation.pipelines import (
    CAPTIONER_UPSTREAM,
    LLM_UPSTREAM,
    SD_UPSTREAM,
    LocalModelNotFoundError,
    caption_images,
    generate_text,
    load_captioner,
    load_llm,
    load_sd_pipeline,
)

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
