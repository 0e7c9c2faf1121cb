"""Tiny CLIP models of the real kind (open_clip's own ``CLIP`` class), their wrapper and training.

The tiny profile trains CLIP from scratch on the procedural shapes world, on CPU, in minutes. To keep
every zero-shot CIR method honest, the model is *not* a look-alike: it is ``open_clip.CLIP`` built
from a config dict in the same format as open_clip's ``model_configs/*.json``, tokenised with the same
``SimpleTokenizer`` (49,408 BPE tokens), so that pseudo-token methods (Pic2Word, SEARLE, LinCIR,...)
manipulate the very same token-embedding table and text transformer they do with ViT-L/14.

:class:`CLIPModel` wraps any ``open_clip.CLIP`` (tiny or paper backbone) with the batched encoders
the methods need, including :meth:`CLIPModel.encode_texts_with_pseudo`, which replaces the token
embedding of the placeholder ``$`` by a given vector before the text transformer.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from cirlib.config import atomic_write_bytes, config_hash, progress_bar

#: The placeholder of pseudo-word methods (SEARLE and LinCIR use ``$``; Pic2Word used ``*``). In
#: open_clip's SimpleTokenizer a free-standing ``$`` is ONE token (``$</w>``, id 259). Glued to
#: punctuation it would merge (``$.`` is token 34682), so texts are spaced around it before tokenising.
PLACEHOLDER = "$"

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: The tiny CLIP of the tiny profile, as data: ``configs/cir-tiny.json`` in open_clip's model-config
#: format, registered with open_clip below, so ``open_clip.create_model("cir-tiny")`` builds it too.
#: Choices: 64x64 images with 8x8 patches (64 patch tokens + CLS) keep a ViT cheap on two CPU cores
#: while leaving positions legible; width 128 / 4 layers (vision) and 3 layers (text): 600 steps of
#: 256 pairs (10 minutes on an idle 2-core machine) reach a held-out full-caption text->image R@1 of
#: 65.8 over 1,000 world images. ``context_length`` 32: world captions measured 16 tokens median, 46
#: at p95, 51 at most (SOT/EOT included) over 3,000 captions, so 32 truncates about a quarter of the
#: long full-scene captions (their last object is cut, as web alt-text is often partial); 56 would
#: cover them at ~1.3x the training cost. Composed prompts ("a photo of $ that <edit>") fit in 32
#: tokens. The vocabulary stays at open_clip's 49,408 (most of the ~7.8M parameters) so that the
#: tokenizer is the real one. ``head_width`` 32 gives 4 vision heads, like the 4 text heads.
CONFIG_DIR = Path(__file__).parent / "configs"
TINY_CLIP_CONFIG: dict[str, Any] = json.loads((CONFIG_DIR / "cir-tiny.json").read_text())
open_clip.add_model_config(CONFIG_DIR)

#: Named tiny configs (``CLIPTrainConfig.arch`` may be one of these names or a config dict).
TINY_CLIP_CONFIGS: dict[str, dict[str, Any]] = {"cir-tiny": TINY_CLIP_CONFIG}


class PlaceholderError(ValueError):
    """A text given to a pseudo-token encoder lacks the placeholder, has it more than once, or loses
    it to truncation."""


def resolve_model_config(arch: str | Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a named tiny config, or of the given config dict."""
    if isinstance(arch, str):
        if arch not in TINY_CLIP_CONFIGS:
            raise KeyError(f"unknown tiny CLIP config {arch!r}; known: {', '.join(TINY_CLIP_CONFIGS)}")
        return copy.deepcopy(TINY_CLIP_CONFIGS[arch])
    return copy.deepcopy(dict(arch))


def build_open_clip(model_config: Mapping[str, Any]) -> open_clip.CLIP:
    """Instantiate ``open_clip.CLIP`` from an open_clip-format config dict (random init, float32)."""
    cfg = copy.deepcopy(dict(model_config))
    if cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {}):
        raise ValueError("only open_clip.CLIP configs (built-in text transformer) are supported")
    return open_clip.CLIP(**cfg)


def default_threads(n: int | None = None) -> int:
    """``n``, else ``$CIRLIB_THREADS``, else the number of cores this process may use."""
    if n:
        return int(n)
    env = os.environ.get("CIRLIB_THREADS")
    return int(env) if env else _available_cores()


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (see :func:`default_threads`), restoring the previous count."""
    prev = torch.get_num_threads()
    torch.set_num_threads(default_threads(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class CLIPModel:
    """A frozen CLIP with batched, normalised encoders and pseudo-token text encoding.

    ``preprocess="tensor"`` (tiny profile) converts uint8 arrays straight to normalised tensors
    (resizing with antialiased bilinear interpolation if the size differs), exactly as training does;
    ``preprocess="pil"`` (paper profile) runs open_clip's own inference transform image by image.

    Encoders return ordinary (not inference-mode) float32 CPU tensors, so results may feed autograd.
    The model is treated as immutable: :attr:`hash` is computed once and cached.
    """

    def __init__(
        self,
        model: open_clip.CLIP,
        model_config: Mapping[str, Any],
        *,
        name: str = "cir-tiny",
        profile: Literal["tiny", "paper"] = "tiny",
        preprocess: Literal["tensor", "pil"] = "tensor",
        preprocess_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, open_clip.CLIP):
            raise TypeError(f"CLIPModel wraps open_clip.CLIP, got {type(model).__name__}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model_config = copy.deepcopy(dict(model_config))
        self.name = name
        self.profile = profile
        self.preprocess = preprocess
        self.preprocess_cfg = dict(preprocess_cfg or {})
        self.tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
        ids = self.tokenizer.encode(PLACEHOLDER)
        if len(ids) != 1:
            raise RuntimeError(f"placeholder {PLACEHOLDER!r} is not one token in this tokenizer: {ids}")
        self.placeholder_id: int = ids[0]
        self.training_losses: list[float] = []
        self._hash: str | None = None
        self._pil_transform: Callable[[Any], torch.Tensor] | None = None
        self.device = torch.device("cpu")
        self.precision: Literal["fp32", "fp16", "bf16"] = "fp32"

    # ----------------------------------------------------------------- properties
    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint (normalised) embedding space."""
        return int(self.model_config["embed_dim"])

    @property
    def token_dim(self) -> int:
        """Dimension W of the token-embedding space (what a pseudo token lives in)."""
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def hash(self) -> str:
        """16 hex chars of sha256 over the model config, the preprocessing and every tensor of the
        state dict (name, dtype, shape, bytes): the key of every embedding cache built on this model."""
        if self._hash is None:
            self._hash = state_dict_hash(
                self.model.state_dict(),
                {"model_config": self.model_config, "preprocess": self.preprocess, **self.preprocess_cfg},
            )
        return self._hash

    @property
    def compute_signature(self) -> dict[str, str]:
        """Where and how encoders run: part of every embedding-cache key, since a GPU or a lower
        precision changes the numbers slightly and a shared cache must not mix them."""
        return {"device": self.device.type, "precision": self.precision}

    def to(
        self, device: str | torch.device, precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    ) -> CLIPModel:
        """Move the model to ``device``; ``precision`` fp16/bf16 runs the encoders under CUDA autocast
        (weights stay float32, as open_clip's own ``amp`` precision does). Returns ``self``."""
        device = torch.device(device)
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
        if precision != "fp32" and device.type != "cuda":
            raise ValueError(f"precision {precision} needs a CUDA device, not {device}")
        self.model.to(device)
        self.device, self.precision = device, precision
        return self

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def __repr__(self) -> str:
        return (
            f"CLIPModel(name={self.name!r}, profile={self.profile!r}, embed_dim={self.embed_dim}, "
            f"token_dim={self.token_dim}, image_size={self.image_size})"
        )

    # ----------------------------------------------------------------- images
    def preprocess_images(self, images: np.ndarray | Sequence[Any]) -> torch.Tensor:
        """uint8 ``[N,H,W,3]`` (or, for ``pil``, a list of arrays / PIL images) -> float ``[N,3,S,S]``."""
        if self.preprocess == "pil":
            return self._preprocess_pil(images)
        return images_to_tensor(images, self.image_size)

    def _preprocess_pil(self, images: np.ndarray | Sequence[Any]) -> torch.Tensor:
        from PIL import Image

        transform = self.pil_transform
        out = []
        for im in images:
            if isinstance(im, np.ndarray):
                _check_uint8_image(im)
                im = Image.fromarray(im)
            out.append(transform(im.convert("RGB")))
        return torch.stack(out)

    @property
    def pil_transform(self) -> Callable[[Any], torch.Tensor]:
        """PIL image -> normalised ``[3,S,S]`` tensor: open_clip's inference transform, or SEARLE's
        ``targetpad`` variant when ``preprocess_cfg`` has ``resize_mode="targetpad"`` (see
        :func:`targetpad_transform`). Picklable, so DataLoader workers can use it."""
        if self._pil_transform is None:
            cfg = dict(self.preprocess_cfg)
            if cfg.get("resize_mode") == "targetpad":
                self._pil_transform = targetpad_transform(
                    self.image_size,
                    cfg.get("target_ratio", TARGETPAD_RATIO),
                    cfg.get("mean", OPENAI_MEAN),
                    cfg.get("std", OPENAI_STD),
                )
            else:
                cfg.pop("target_ratio", None)
                self._pil_transform = open_clip.transform.image_transform_v2(
                    open_clip.transform.PreprocessCfg(**cfg), is_train=False
                )
        return self._pil_transform

    def encode_images(
        self,
        images: np.ndarray | Sequence[Any],
        batch_size: int = 256,
        *,
        progress: bool | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Image embeddings ``[N, D]`` of uint8 RGB images ``[N,H,W,3]``, L2-normalised unless
        ``normalize=False`` (the released phi networks take the raw features)."""
        if self.preprocess == "tensor":
            _check_uint8_batch(images)
        n = len(images)
        chunks = []
        show = progress if progress is not None else n > 4 * batch_size
        for start in progress_bar(range(0, n, batch_size), desc="encode images", show=show):
            chunks.append(
                self.encode_pixels(self.preprocess_images(images[start : start + batch_size]), normalize)
            )
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)

    def encode_pixels(
        self,
        x: torch.Tensor,
        normalize: bool = True,
        pixel_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embeddings of preprocessed images ``[N,3,S,S]``, float32 on the CPU. ``x`` is normalised
        float, or uint8 straight from :meth:`_file_transform` together with its ``pixel_stats``
        (mean, std), scaled and normalised here on the model's device: a quarter of the bytes cross
        from the decoding workers."""
        with torch.inference_mode(), self._autocast():
            x = x.to(self.device, non_blocking=True)
            if x.dtype == torch.uint8:
                if pixel_stats is None:
                    raise ValueError("uint8 pixels need pixel_stats (mean, std) to be normalised")
                mean, std = (t.to(x.device) for t in pixel_stats)
                x = x.float().div_(255).sub_(mean).div_(std)
            features = self.model.encode_image(x).float()
            if normalize:
                features = F.normalize(features, dim=-1)
        return features.cpu().clone()

    def encode_pixels_with_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised global embeddings ``[N, D]`` and the final-layer patch tokens ``[N, P, W]``
        (after ``ln_post``, before the projection; P = (S / patch size)^2) of preprocessed images, from
        one pass of open_clip's ``VisionTransformer`` with ``output_tokens`` set (PrediCIR's input)."""
        visual = self.model.visual
        if not hasattr(visual, "output_tokens"):
            raise TypeError(f"{type(visual).__name__} does not expose patch tokens (a ViT is needed)")
        previous = visual.output_tokens
        visual.output_tokens = True
        try:
            with torch.inference_mode(), self._autocast():
                pooled, tokens = visual(x.to(self.device, non_blocking=True))
        finally:
            visual.output_tokens = previous
        return F.normalize(pooled.float(), dim=-1).cpu().clone(), tokens.float().cpu().clone()

    def _file_transform(
        self,
    ) -> tuple[Callable[[Any], torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """:attr:`pil_transform` with its final to-tensor and normalise steps replaced by a uint8
        conversion, plus the (mean, std) those steps used, when it ends with them (open_clip's and
        targetpad's transforms do); :meth:`encode_pixels` then does the same arithmetic, so the
        features are unchanged. Otherwise the float transform itself and ``None``."""
        from torchvision import transforms as T

        steps = list(getattr(self.pil_transform, "transforms", []))
        if len(steps) >= 2 and isinstance(steps[-1], T.Normalize) and "ToTensor" in type(steps[-2]).__name__:
            stats = tuple(
                torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (steps[-1].mean, steps[-1].std)
            )
            return T.Compose([*steps[:-2], _to_uint8_chw]), stats  # type: ignore[return-value]
        return self.pil_transform, None

    def encode_image_files(
        self,
        paths: Sequence[str | Path],
        batch_size: int = 64,
        *,
        num_workers: int = 0,
        progress: bool | None = None,
        normalize: bool = True,
        desc: str = "encode images",
    ) -> torch.Tensor:
        """Embeddings ``[N, D]`` of image files, decoded and preprocessed (:attr:`pil_transform`) in
        ``num_workers`` DataLoader workers. A file that cannot be read raises :class:`ImageFileError`
        naming it: an image never silently drops out of a gallery (PROTOCOLS §6.9)."""
        if self.preprocess != "pil":
            raise ValueError("encode_image_files needs a CLIPModel with preprocess='pil' (the paper profile)")
        transform, pixel_stats = self._file_transform()
        loader = torch.utils.data.DataLoader(
            _ImageFiles([str(p) for p in paths], transform),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
        )
        show = progress if progress is not None else len(paths) > 4 * batch_size
        chunks = [
            self.encode_pixels(x, normalize, pixel_stats)
            for x in progress_bar(loader, desc=desc, total=len(loader), show=show, unit="batch")
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)

    # ----------------------------------------------------------------- texts
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``[N, context_length]`` (open_clip SimpleTokenizer; long texts are truncated)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        tokens = self.tokenizer(list(texts))
        warn_if_truncated(tokens, "CLIPModel.tokenize")
        return tokens

    def encode_texts(self, texts: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]``."""
        tokens = self.tokenize(texts)
        chunks = []
        with torch.inference_mode(), self._autocast():
            for start in progress_bar(
                range(0, len(tokens), batch_size), desc="encode texts", show=len(tokens) > 4 * batch_size
            ):
                batch = tokens[start : start + batch_size].to(self.device)
                chunks.append(F.normalize(self.model.encode_text(batch).float(), dim=-1).cpu())
            out = torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)
        return out.clone()

    def tokenize_with_placeholder(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[N, L]`` and the position ``[N]`` of the single placeholder token in each text.

        Raises :class:`PlaceholderError` naming the offending text if ``$`` is missing, repeated or
        truncated away."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        spaced = []
        for i, text in enumerate(texts):
            count = text.count(PLACEHOLDER)
            if count != 1:
                raise PlaceholderError(
                    f"text {i} {text!r} contains the placeholder {PLACEHOLDER!r} {count} times; "
                    "it must contain it exactly once"
                )
            # Free-standing so that BPE keeps it one token ('$.' or '$$' would merge).
            spaced.append(text.replace(PLACEHOLDER, f" {PLACEHOLDER} "))
        tokens = self.tokenize(spaced)
        hits = tokens == self.placeholder_id
        per_row = hits.sum(dim=1)
        for i in torch.nonzero(per_row != 1).flatten().tolist():
            raise PlaceholderError(
                f"text {i} {texts[i]!r} has {int(per_row[i])} placeholder tokens after tokenising "
                f"(context length {self.context_length}; a long text truncates it away)"
            )
        return tokens, hits.int().argmax(dim=1)

    def text_features_from_embeddings(self, token_embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip ``CLIP.encode_text`` (v3.3.0) from token embeddings instead of ids, unnormalised.

        Mirrors the library line by line: cast, + positional embedding, transformer with the causal
        mask, ``ln_final``, pooling at EOT (``text_global_pool`` on the ids), text projection."""
        return self.pool_text_hidden_states(self.text_hidden_states_from_embeddings(token_embeds), tokens)

    def pool_text_hidden_states(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features from the hidden states: EOT pooling, then the projection."""
        m = self.model
        x = text_global_pool(hidden, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if m.text_projection is not None:
            if isinstance(m.text_projection, torch.nn.Linear):
                x = m.text_projection(x)
            else:
                x = x @ m.text_projection
        return x

    def text_hidden_states_from_embeddings(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """Per-token output ``[N, L, W]`` of the text transformer after ``ln_final`` (before pooling
        and projection): the sequence a diffusion UNet cross-attends to, as Stable Diffusion 1.x uses
        its CLIP text encoder's last hidden state."""
        m = self.model
        cast_dtype = m.transformer.get_cast_dtype()
        x = token_embeds.to(cast_dtype) + m.positional_embedding.to(cast_dtype)
        return m.ln_final(m.transformer(x, attn_mask=m.attn_mask))

    def embeddings_with_pseudo(
        self, tokens: torch.Tensor, positions: torch.Tensor, pseudo: torch.Tensor
    ) -> torch.Tensor:
        """Token embeddings ``[N, L, W]`` of ``tokens`` with ``pseudo[i]`` in place of token
        ``positions[i]`` (differentiable in ``pseudo``)."""
        if pseudo.ndim != 2 or pseudo.shape != (tokens.shape[0], self.token_dim):
            raise ValueError(
                f"pseudo tokens must have shape [{tokens.shape[0]}, {self.token_dim}], got {list(pseudo.shape)}"
            )
        x = self.model.token_embedding(tokens)
        mask = F.one_hot(positions, tokens.shape[1]).bool().unsqueeze(-1)  # [N, L, 1]
        return torch.where(mask, pseudo.to(x.dtype).unsqueeze(1), x)

    def text_hidden_states_with_pseudo(
        self, texts: Sequence[str], pseudo: torch.Tensor | None = None, batch_size: int = 1024
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states ``[N, L, W]`` (see :meth:`text_hidden_states_from_embeddings`) and the
        L2-normalised pooled text features ``[N, D]`` of ``texts``, from one pass, with ``$`` replaced by
        ``pseudo[i]`` (``pseudo=None``: plain texts): the two conditions an SDXL-style UNet takes
        (cross-attention sequence and pooled embedding)."""
        if pseudo is None:
            tokens = self.tokenize(texts)
        else:
            tokens, positions = self.tokenize_with_placeholder(texts)
            pseudo = torch.as_tensor(pseudo, dtype=torch.float32)
        states, pooled = [], []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(tokens), batch_size):
                sl = slice(start, start + batch_size)
                batch = tokens[sl].to(self.device)
                if pseudo is None:
                    embeds = self.model.token_embedding(batch)
                else:
                    embeds = self.embeddings_with_pseudo(
                        batch, positions[sl].to(self.device), pseudo[sl].to(self.device)
                    )
                hidden = self.text_hidden_states_from_embeddings(embeds)
                states.append(hidden.float().cpu())
                pooled.append(F.normalize(self.pool_text_hidden_states(hidden, batch).float(), dim=-1).cpu())
        if not states:
            return torch.zeros(0, self.context_length, self.token_dim), torch.zeros(0, self.embed_dim)
        return torch.cat(states).clone(), torch.cat(pooled).clone()

    def text_features_with_pseudo(
        self, tokens: torch.Tensor, positions: torch.Tensor, pseudo: torch.Tensor
    ) -> torch.Tensor:
        """Unnormalised text features with ``pseudo[i]`` in place of token ``positions[i]``.

        Differentiable in ``pseudo`` (for Pic2Word / SEARLE training); the CLIP itself stays frozen."""
        return self.text_features_from_embeddings(
            self.embeddings_with_pseudo(tokens, positions, pseudo), tokens
        )

    def encode_texts_with_pseudo(
        self, texts: Sequence[str], pseudo: torch.Tensor, batch_size: int = 1024
    ) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]`` of ``texts`` whose ``$`` is replaced by ``pseudo[i]``
        (``[N, token_dim]``), as Pic2Word / SEARLE / LinCIR compose a query."""
        tokens, positions = self.tokenize_with_placeholder(texts)
        pseudo = torch.as_tensor(pseudo, dtype=torch.float32)
        if pseudo.shape != (len(texts), self.token_dim):
            raise ValueError(
                f"pseudo tokens must have shape [{len(texts)}, {self.token_dim}], got {list(pseudo.shape)}"
            )
        chunks = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(tokens), batch_size):
                sl = slice(start, start + batch_size)
                features = self.text_features_with_pseudo(
                    tokens[sl].to(self.device), positions[sl].to(self.device), pseudo[sl].to(self.device)
                )
                chunks.append(F.normalize(features.float(), dim=-1).cpu())
            out = torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)
        return out.clone()

    def token_embedding_of(self, words: Sequence[str]) -> torch.Tensor:
        """Token embeddings ``[N, W]`` of single-token words (raises if a word is several tokens)."""
        ids = []
        for w in words:
            enc = self.tokenizer.encode(w)
            if len(enc) != 1:
                raise ValueError(f"word {w!r} is {len(enc)} tokens {enc}, not one")
            ids.append(enc[0])
        with torch.inference_mode():
            out = self.model.token_embedding.weight[torch.tensor(ids, dtype=torch.long, device=self.device)]
        return out.cpu().clone()


# --------------------------------------------------------------------------- image files
class ImageFileError(OSError):
    """An image file of a gallery is missing or cannot be decoded; the message names the file."""


class _ImageFiles(torch.utils.data.Dataset):
    """Paths -> preprocessed tensors, for a DataLoader (module level so workers can pickle it)."""

    def __init__(self, paths: list[str], transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return self.transform(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ImageFileError(f"{path}: cannot read this image ({err})") from None


def _to_uint8_chw(image: Any) -> torch.Tensor:
    """RGB PIL image (``_ImageFiles`` converts every image) -> uint8 tensor ``[3, H, W]``."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


#: SEARLE's ``targetpad`` ratio (its scripts' default ``--target-ratio 1.25``).
TARGETPAD_RATIO = 1.25


class TargetPad:
    """Pad an image symmetrically with black to aspect ratio ``target_ratio`` when it is more
    elongated than that, so that the centre crop that follows keeps the whole object (SEARLE's and
    CLIP4Cir's ``targetpad`` preprocessing; FashionIQ products are tall, CIRR pairs wide)."""

    def __init__(self, target_ratio: float = TARGETPAD_RATIO) -> None:
        if target_ratio < 1:
            raise ValueError(f"target_ratio must be >= 1, got {target_ratio}")
        self.target_ratio = target_ratio

    def __call__(self, image: Any) -> Any:
        from PIL import ImageOps

        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        side = max(w, h) / self.target_ratio  # the short side after padding
        pad_x = max(int((side - w) / 2), 0)
        pad_y = max(int((side - h) / 2), 0)
        return ImageOps.expand(image, border=(pad_x, pad_y, pad_x, pad_y), fill=0)


def targetpad_transform(
    image_size: int,
    target_ratio: float = TARGETPAD_RATIO,
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
) -> Callable[[Any], torch.Tensor]:
    """``TargetPad`` then bicubic resize of the short side, centre crop, tensor, normalise."""
    from torchvision import transforms as T

    return T.Compose(
        [
            TargetPad(target_ratio),
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(tuple(mean), tuple(std)),
        ]
    )


# --------------------------------------------------------------------------- helpers
def state_dict_hash(state_dict: Mapping[str, torch.Tensor], extra: Any) -> str:
    """sha256 (16 hex) over JSON of ``extra`` and each tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def warn_if_truncated(tokens: torch.Tensor, where: str) -> None:
    """Warn when texts fill the whole context (open_clip truncates them silently, keeping EOT last)."""
    full = int((tokens[:, -1] != 0).sum())
    if full:
        warnings.warn(
            f"{where}: {full} of {len(tokens)} texts fill the context length {tokens.shape[1]} and may be "
            "truncated (their end is dropped)",
            stacklevel=3,
        )


def _check_uint8_image(im: np.ndarray) -> None:
    if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
        raise ValueError(f"expected a uint8 image [H,W,3], got dtype {im.dtype} shape {im.shape}")


def _check_uint8_batch(images: Any) -> None:
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[3] != 3
    ):
        desc = f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
        raise ValueError(f"expected uint8 images as a numpy array [N,H,W,3], got {desc}")


def images_to_tensor(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 ``[N,H,W,3]`` -> CLIP-normalised float ``[N,3,S,S]`` (the tiny profile's preprocessing,
    shared by training and inference; no PIL round trip)."""
    _check_uint8_batch(images)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2).div_(255.0)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _augment(x: torch.Tensor, max_shift: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random small translations (edge-replicated) and optional horizontal flips, per image."""
    n, _, h, w = x.shape
    if max_shift > 0:
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        shifts = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
        x = torch.stack(
            [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(shifts.tolist())]
        )
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    return x


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class CLIPTrainConfig:
    """Contrastive pre-training of a tiny CLIP (hyper-parameters follow CLIP / open_clip's recipe:
    AdamW with betas (0.9, 0.98), eps 1e-6, weight decay off for gains/biases/logit scale, linear
    warm-up then cosine decay, learnable temperature initialised at 1/0.07 and capped at 100)."""

    arch: str | dict = "cir-tiny"
    steps: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    max_logit_scale: float = 100.0
    grad_clip_norm: float | None = 1.0
    #: Off by default: positions and left/right carry meaning in the shapes world.
    augment_max_shift: int = 0
    augment_hflip: bool = False
    checkpoint_every: int = 50


def _lr_at(step: int, cfg: CLIPTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class EpochSampler:
    """Deterministic batches: epoch ``e`` is a permutation seeded by ``(seed, e)``; step ``s`` takes
    positions ``[s*B, (s+1)*B)`` of the concatenated epochs. A function of ``(seed, step)`` alone,
    so that a resumed run draws exactly the batches an uninterrupted run would."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 2:
            raise ValueError(f"need at least 2 training pairs, got {n}")
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def batch(self, step: int) -> np.ndarray:
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = pos // self.n, pos % self.n
        return np.array([self._perm(int(e))[o] for e, o in zip(epochs, offsets)])


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's training rule: no decay for gains, biases and the logit scale."""

    def exclude(name: str, p: torch.nn.Parameter) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
    ]


def _data_digest(images: np.ndarray, captions: Sequence[str]) -> str:
    h = hashlib.sha256(f"{images.shape}|{images.dtype}".encode())
    h.update(np.ascontiguousarray(images).data)
    h.update(json.dumps(list(captions)).encode())
    return h.hexdigest()[:16]


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE between normalised ``a`` and ``b`` (row i of each is a positive pair)."""
    logits = logit_scale * a @ b.T
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


STATE_FILE = "train_state.pt"


def save_training_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write a resumable training state (``torch.save``) atomically: an interrupted write never
    leaves a truncated state under ``path``."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


def train_clip(
    images: np.ndarray,
    captions: Sequence[str],
    config: CLIPTrainConfig,
    seed: int,
    *,
    resume_dir: Path | None = None,
    stop_after: int | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> CLIPModel:
    """Train a CLIP from scratch on image-caption pairs with the symmetric contrastive loss.

    Deterministic given ``seed`` (and the thread count): the init is seeded, batches come from
    :class:`EpochSampler`, augmentation uses a generator seeded by ``(seed, step)`` and torch runs
    with deterministic algorithms. With ``resume_dir`` the full training state (weights, AdamW moments,
    step, losses) is written atomically every ``config.checkpoint_every`` steps and a later call
    continues from it; the result equals an uninterrupted run. ``stop_after`` ends the run after that
    many total steps (saving state), e.g. to time-box training.

    ``num_threads`` (default: ``$CIRLIB_THREADS``, else every core; restored afterwards) is not part
    of the config: it changes speed, not the recipe. On a machine shared with other jobs, one thread
    can be several times faster than oversubscribed intra-op threads (measured: 112 vs 30 pairs/s).
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    _check_uint8_batch(images)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(default_threads(num_threads))
    model_config = resolve_model_config(config.arch)
    # checkpoint_every does not change the result, so a run may resume with another value
    cfg_key = config_hash({"train": replace(config, checkpoint_every=0), "model_config": model_config})
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(seed)
        model = build_open_clip(model_config)
        model.train()
        image_size = model.visual.image_size
        image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
        optimizer = torch.optim.AdamW(
            _param_groups(model, config.weight_decay),
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            eps=config.eps,
        )
        tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
        tokens = tokenizer(list(captions))
        warn_if_truncated(tokens, "train_clip")
        sampler = EpochSampler(len(images), config.batch_size, seed)
        start, losses = 0, []

        state_path = Path(resume_dir) / STATE_FILE if resume_dir is not None else None
        digest = _data_digest(images, captions) if state_path is not None else ""
        if state_path is not None and state_path.exists():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if (state["config_hash"], state["seed"], state["data_digest"]) != (cfg_key, seed, digest):
                raise RuntimeError(
                    f"training state {state_path} belongs to another run (config {state['config_hash']}, "
                    f"seed {state['seed']}, data {state['data_digest']}; this run: {cfg_key}, {seed}, {digest}); "
                    "delete it or use another resume_dir"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, losses = int(state["step"]), list(state["losses"])

        def save_state(step: int) -> None:
            if state_path is None:
                return
            save_training_state(
                state_path,
                {
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "losses": losses,
                    "config_hash": cfg_key,
                    "seed": seed,
                    "data_digest": digest,
                },
            )

        end = config.steps if stop_after is None else min(config.steps, stop_after)
        max_log_scale = math.log(config.max_logit_scale)
        bar = progress_bar(range(start, end), desc="train CLIP", show=progress, initial=start, total=end)
        for step in bar:
            lr = _lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = sampler.batch(step)
            x = images_to_tensor(images[idx], image_size)
            if config.augment_max_shift > 0 or config.augment_hflip:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
                x = _augment(x, config.augment_max_shift, config.augment_hflip, gen)
            img = F.normalize(model.encode_image(x), dim=-1)
            txt = F.normalize(model.encode_text(tokens[idx]), dim=-1)
            loss = contrastive_loss(img, txt, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_log_scale)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
            done = step + 1
            if done % config.checkpoint_every == 0 or done == end:
                save_state(done)
        if start >= end:
            save_state(start)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    clip = CLIPModel(model, model_config, name=config.arch if isinstance(config.arch, str) else "custom")
    clip.training_losses = losses
    return clip


def clip_from_state_dict(
    model_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], *, name: str = "cir-tiny"
) -> CLIPModel:
    """Rebuild a tiny-profile :class:`CLIPModel` from a config and a (possibly fp16) state dict."""
    model = build_open_clip(model_config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
    return CLIPModel(model, model_config, name=name)


__all__ = [
    "PLACEHOLDER",
    "TINY_CLIP_CONFIG",
    "TINY_CLIP_CONFIGS",
    "CLIPModel",
    "CLIPTrainConfig",
    "EpochSampler",
    "PlaceholderError",
    "build_open_clip",
    "clip_from_state_dict",
    "contrastive_loss",
    "images_to_tensor",
    "resolve_model_config",
    "state_dict_hash",
    "train_clip",
]
