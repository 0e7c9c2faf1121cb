"""Generative models: CIG's composed-image generator (tiny profile, trained here) and the paper
profile's local-folder loaders (Stable Diffusion 1.5 / SDXL, BLIP-2, an instruction LLM).

``composed``: the tiny generator (diffusers ``UNet2DConditionModel``), its training, seeded sampling,
CIG's quality filter and the pseudo-target cache; ``paper_cig``: CIG over SD / SDXL with released
phis; ``pipelines``: the local loaders; ``files``: where their local files are expected (no torch). Attributes are imported lazily (PEP 562), so that path
checks need neither torch nor diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_LAZY: dict[str, str] = {
    **{
        name: "cirlib.generation.files"  # no torch: path checks
        for name in (
            "CAPTIONER_UPSTREAM",
            "CIG_PHIS",
            "GLIGEN_UPSTREAM",
            "LLM_UPSTREAM",
            "SD_UPSTREAM",
            "IPCIRFiles",
            "LocalModelNotFoundError",
            "MissingGeneratorFilesError",
            "MissingIPCIRFilesError",
            "resolve_generator_files",
            "resolve_ipcir_files",
        )
    },
    **{
        name: "cirlib.generation.pipelines"
        for name in ("caption_images", "generate_text", "load_captioner", "load_llm", "load_sd_pipeline")
    },
    **{
        name: "cirlib.generation.composed"
        for name in (
            "GeneratorArch",
            "GeneratorTrainConfig",
            "GeneratorUNet",
            "PseudoTargetCache",
            "PseudoTargetGenerator",
            "SamplingConfig",
            "TinyComposedGenerator",
            "generate_with_retries",
            "train_generator",
        )
    },
    **{
        name: "cirlib.generation.paper_cig"
        for name in (
            "CIG_PROMPT",
            "PseudoTokenEncoder",
            "StableDiffusionComposedGenerator",
            "load_paper_cig_generator",
        )
    },
    **{
        name: "cirlib.generation.paper_ipcir"
        for name in (
            "IPCIR_PLAN_PROMPT",
            "Blip2Captioner",
            "GligenLayoutGenerator",
            "LLMPlanner",
            "load_ipcir_components",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cirlib.generation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
