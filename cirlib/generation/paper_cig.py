"""CIG's pseudo-target generator, paper profile: a Stable Diffusion pipeline conditioned on a composed
prompt whose ``$`` is the reference image's LinCIR pseudo token.

What CIG's official code does (``lan-lw/ComposedImageGen``, read from ``extract_lincir_feat.py``,
``test_CIG.py`` and ``datasets/dataset_utils.py``):

* **Pseudo tokens.** Two LinCIR phi networks, ``phi_best.pt`` on ``openai/clip-vit-large-patch14``
  and ``phi_best_giga.pt`` on ``Geonmo/CLIP-Giga-config-fixed`` (the bigG CLIP), map the RAW
  projected image embedding (``CLIPVisionModelWithProjection(...).image_embeds``; images resized to
  224 on the short side, bicubic, centre-cropped, OpenAI mean/std) to one token each, in float32.
* **Composed prompt.** ``"a photo of $ that {relative caption}"``, tokenised with OpenAI's
  ``clip.tokenize(..., context_length=77, truncate=True)`` (zero padding after the end-of-text
  token). In each text encoder (HF ``CLIPTextModelWithProjection``, float32) the token embedding at
  every position whose id is 259 (``$``) is replaced by the pseudo token, before the positional
  embedding is added.
* **SDXL conditioning.** ``prompt_embeds`` = concat(penultimate hidden states of the ViT-L/14 text
  encoder, of the bigG text encoder) on the last dim; ``pooled_prompt_embeds`` = the bigG encoder's
  projected pooled output (``text_embeds``), as diffusers' own SDXL ``encode_prompt`` builds them.
* **Generation.** ``StableDiffusionXLPipeline`` from ``stabilityai/stable-diffusion-xl-base-1.0``
  with the fine-tuned UNet of ``{model_path}/unet`` and the VAE ``madebyollin/sdxl-vae-fp16-fix``,
  float16 on CUDA; 50 steps, 512x512, batches of 4, ``guidance_scale`` never set (diffusers'
  default applies: 5.0 for SDXL in the installed diffusers), one ``torch.Generator("cuda")`` per image
  seeded 1600. An image whose mean brightness is at most 10 is regenerated with the seed increased
  by one, up to 5 times.

What :func:`load_paper_cig_generator` matches: the same phis (:data:`CIG_PHIS`, loaded by
:mod:`cirlib.models.released`) on the same raw image features (open_clip backbones from local
files, the ``clip`` preprocessing), the same prompt, the placeholder replaced in the token embedding
(a forward hook on the text encoder's input embedding), the text encoders run in float32 and their
outputs cast to the pipeline dtype, ``clip.tokenize``'s zero padding (SDXL), the penultimate /
pooled layout, per-image generators on the pipeline's device, the pipeline's default guidance.
Differences: the text encoders are the pipeline's own ``text_encoder`` / ``text_encoder_2`` (SDXL's
are CLIP ViT-L/14 and OpenCLIP bigG; that they hold the same weights as the two HF CLIPs CIG loads
is UNVERIFIED), and the seed is the caller's (CIG uses 1600 for every image). The brightness filter
is not here: :func:`cirlib.generation.composed.generate_with_retries` applies it to any generator
(re-seeding, as CIG does).

SD 1.5 (one CLIP ViT-L/14 text encoder, ``cig-lincir-vit-l14``) is supported too, conditioned as SD
1.5 conditions itself: the last hidden state, the pipeline tokenizer's own padding. CIG has no SD 1.5
path; this is cirlib's.

Nothing is downloaded: every folder and weights file is checked (:func:`resolve_generator_files`)
before diffusers, transformers or any weights are loaded, and every missing one is reported in one
:class:`MissingGeneratorFilesError`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch

from cirlib.generation.files import (
    CIG_PHIS,
    GeneratorFiles,
    MissingGeneratorFilesError,
    resolve_generator_files,
)
from cirlib.generation.pipelines import load_sd_pipeline
from cirlib.models.released import ReleasedPhi

if TYPE_CHECKING:  # pragma: no cover - importing cirlib.models.clip imports open_clip (and transformers)
    from cirlib.models.clip import CLIPModel
    from cirlib.models.phi import Phi

log = logging.getLogger("cirlib.generation.paper_cig")

#: CIG's composed prompt (``extract_lincir_feat.py``): ``$`` is the pseudo token, ``{text}`` the
#: relative caption.
CIG_PROMPT = "a photo of $ that {text}"
#: OpenAI ``clip.tokenize`` pads with id 0 after the end-of-text token (CIG tokenises so for both
#: encoders; SDXL's ``tokenizer`` pads with end-of-text tokens instead, its ``tokenizer_2`` with 0).
CLIP_TOKENIZE_PAD_ID = 0
PLACEHOLDER = "$"  # the same placeholder as cirlib.models.clip.PLACEHOLDER (not imported: open_clip)


class PseudoTokenEncoder(NamedTuple):
    """Image -> pseudo token for one text encoder: ``phi(clip image features)``, the features
    L2-normalised first only when ``input_normalized`` (every released phi takes raw features)."""

    clip: CLIPModel
    phi: Phi
    input_normalized: bool


# --------------------------------------------------------------------------- content identity
def _file_identity(path: Path, *, sha: bool = False) -> dict[str, Any]:
    stat = path.stat()
    out: dict[str, Any] = {"path": str(path.resolve()), "size": stat.st_size}
    if sha:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        out["sha256"] = h.hexdigest()
    else:
        out["mtime_ns"] = stat.st_mtime_ns
    return out


def _folder_identity(folder: Path) -> dict[str, Any]:
    """Path, then size and mtime of every file (hidden ones aside: ``huggingface-cli download``
    keeps its own bookkeeping under ``.cache``), so that replacing a weights or config file changes
    the key, without reading gigabytes."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            stat = path.stat()
            files[rel.as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return {"path": str(folder.resolve()), "files": files}


def files_identity(files: GeneratorFiles) -> dict[str, Any]:
    """JSON content key of the generator's files: folders by file sizes and mtimes, phi files by
    sha256 (small), CLIP weights by size and mtime (up to 10 GB for bigG)."""
    return {
        "pipeline": _folder_identity(files.pipeline),
        "unet": _folder_identity(files.unet) if files.unet is not None else None,
        "vae": _folder_identity(files.vae) if files.vae is not None else None,
        "phis": [
            {"name": spec.name, "phi": _file_identity(phi_path, sha=True), "clip": _file_identity(clip_path)}
            for spec, phi_path, clip_path in files.phis
        ],
    }


def _modules_identity(
    pipe: Any, encoders: Sequence[PseudoTokenEncoder], text_encoders: Sequence[Any]
) -> dict[str, Any]:
    """Content hashes of the in-memory models, for a generator built from objects rather than
    files (tests, notebooks); reads every weight, so it is slow for full-size models."""
    from cirlib.models.clip import state_dict_hash

    out: dict[str, Any] = {"scheduler": dict(pipe.scheduler.config)}
    modules = {"unet": pipe.unet, "vae": pipe.vae}
    modules.update(zip(("text_encoder", "text_encoder_2"), text_encoders))  # the ones that condition
    for name, module in modules.items():
        out[name] = state_dict_hash(module.state_dict(), {"class": type(module).__name__})
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None:
            vocab = json.dumps(sorted(tok.get_vocab().items()))
            out[name] = hashlib.sha256(f"{vocab}|{tok.model_max_length}".encode()).hexdigest()[:16]
    out["pseudo_token_encoders"] = [
        {
            "clip": enc.clip.hash,
            "phi": state_dict_hash(enc.phi.state_dict(), {"arch": getattr(enc.phi, "arch", None)}),
            "input_normalized": bool(enc.input_normalized),
        }
        for enc in encoders
    ]
    return out


# --------------------------------------------------------------------------- the generator
@contextlib.contextmanager
def _placeholder_replaced(text_encoder: Any, placeholder_id: int, tokens: torch.Tensor) -> Iterator[None]:
    """While active, the text encoder's token-embedding output at every position whose input id is
    ``placeholder_id`` is ``tokens[row]`` (CIG's ``torch.where(text == 259, pseudo, x)``, applied
    before the positional embedding as there). A hook rather than a re-implemented forward pass, so
    the encoder runs exactly as transformers writes it (4.x and 5.x lay the modules out differently)."""

    def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        ids = args[0]
        if ids.shape[0] != tokens.shape[0]:
            raise RuntimeError(f"pseudo-token hook: {ids.shape[0]} texts but {tokens.shape[0]} tokens")
        mask = (ids == placeholder_id).unsqueeze(-1)
        return torch.where(mask, tokens.to(device=output.device, dtype=output.dtype).unsqueeze(1), output)

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _phi_dims(phi: Any) -> tuple[int, int]:
    arch = getattr(phi, "arch", None)
    if isinstance(arch, Mapping):
        return int(arch["input_dim"]), int(arch["output_dim"])
    return int(phi.layers[0].in_features), int(phi.fc_out.out_features)


def _phi_name(phi: Any, i: int) -> str:
    spec = getattr(phi, "released", None)
    return f"phi {spec.name!r}" if spec is not None else f"phi #{i}"


def _check_references(references: Sequence[np.ndarray]) -> None:
    for i, im in enumerate(references):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            desc = f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}"
            raise ValueError(f"reference {i}: expected a uint8 RGB image [H, W, 3], got {desc}")


class StableDiffusionComposedGenerator:
    """Pseudo-target images from (reference image, modification text, seed), as CIG generates them.

    ``pipe`` is a diffusers ``StableDiffusionXLPipeline`` (two text encoders) or
    ``StableDiffusionPipeline`` (one); ``encoders`` holds one :class:`PseudoTokenEncoder` (or
    ``(clip, phi, input_normalized)`` triple) per text encoder, in order. For each image the composed
    prompt ``prompt.replace("{text}", text)`` is encoded by every text encoder with the pseudo token
    of the reference in place of ``$``; SDXL conditions on the concatenated penultimate hidden
    states and text_encoder_2's pooled projection, SD 1.x on the last hidden state.

    ``pad_id``: the id written after the end-of-text token (0 = OpenAI ``clip.tokenize``, as CIG
    tokenises), or None for the pipeline tokenizers' own padding (what ``encode_prompt`` gives).
    ``text_encoders``: float32 text encoders to condition with, one per pipeline text encoder (same
    weights); default: the pipeline's own, or float32 copies of them when it runs in half precision
    (CIG encodes in float32 and casts to the pipeline's float16 after; :func:`load_paper_cig_generator`
    loads them in float32 from the files, so no precision is lost to a half-precision round trip).
    ``components``: the JSON identity of the models for :attr:`signature` (the loader passes the
    files'); None hashes the models in memory on first use.

    The same reference, text and seed give the same image whatever else is in the batch, up to the
    float rounding of batched kernels (each image has its own generator). The phis are moved to the
    text encoders' device; the CLIPs stay where they are.
    """

    def __init__(
        self,
        pipe: Any,
        encoders: Sequence[PseudoTokenEncoder | tuple[Any, Any, bool]],
        *,
        steps: int = 50,
        guidance_scale: float | None = None,
        height: int = 512,
        width: int = 512,
        output_size: int | None = None,
        prompt: str = CIG_PROMPT,
        batch_size: int = 4,
        pad_id: int | None = None,
        text_encoders: Sequence[Any] | None = None,
        components: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        self.pipe = pipe
        self.kind: Literal["sd15", "sdxl"] = (
            "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15"
        )
        names = ["text_encoder", "text_encoder_2"] if self.kind == "sdxl" else ["text_encoder"]
        self.text_encoder_names = names
        pipe_encoders = [getattr(pipe, n, None) for n in names]
        tokenizers = [getattr(pipe, n.replace("text_encoder", "tokenizer"), None) for n in names]
        for n, te, tok in zip(names, pipe_encoders, tokenizers):
            if te is None or tok is None:
                raise ValueError(
                    f"the pipeline has no {n} (or its tokenizer); CIG conditions every text encoder"
                )
        if self.kind == "sdxl" and not hasattr(pipe_encoders[1], "text_projection"):
            raise ValueError(
                f"text_encoder_2 is a {type(pipe_encoders[1]).__name__}; SDXL's pooled conditioning needs "
                "a CLIPTextModelWithProjection"
            )
        self.encoders = [PseudoTokenEncoder(*e) for e in encoders]
        if len(self.encoders) != len(names):
            raise ValueError(
                f"a {self.kind} pipeline has {len(names)} text encoder(s) ({', '.join(names)}), so it needs "
                f"{len(names)} pseudo-token encoder(s); got {len(self.encoders)}"
            )
        for i, (enc, te, n) in enumerate(zip(self.encoders, pipe_encoders, names)):
            d_in, d_out = _phi_dims(enc.phi)
            hidden = int(te.config.hidden_size)
            if d_out != hidden:
                raise ValueError(
                    f"{_phi_name(enc.phi, i)} outputs {d_out}-dimensional tokens but {n} "
                    f"({type(te).__name__}) has hidden size {hidden}: pseudo tokens must live in the token-"
                    "embedding space of the text encoder they are written into"
                )
            if d_in != enc.clip.embed_dim:
                raise ValueError(
                    f"{_phi_name(enc.phi, i)} takes {d_in}-dimensional image features but its CLIP "
                    f"({enc.clip.name}) gives {enc.clip.embed_dim}"
                )
        if prompt.count(PLACEHOLDER) != 1 or "{text}" not in prompt:
            raise ValueError(
                f"prompt {prompt!r} must contain the placeholder {PLACEHOLDER!r} exactly once and '{{text}}' "
                f"(e.g. {CIG_PROMPT!r})"
            )
        for name, value in (
            ("steps", steps),
            ("batch_size", batch_size),
            ("height", height),
            ("width", width),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if output_size is not None and int(output_size) < 1:
            raise ValueError(f"output_size must be >= 1 or None, got {output_size}")
        self.tokenizers = tokenizers
        self.placeholder_ids = [self._placeholder_id(tok, n) for tok, n in zip(tokenizers, names)]
        if text_encoders is None:
            # CIG encodes in float32 (its HF CLIPs are float32) and casts to the pipeline's float16
            # after; a float32 copy keeps that when the pipeline runs in half precision.
            self.text_encoders = [
                te if te.dtype == torch.float32 else copy.deepcopy(te).to(torch.float32)
                for te in pipe_encoders
            ]
        else:
            self.text_encoders = list(text_encoders)
            if [type(te) for te in self.text_encoders] != [type(te) for te in pipe_encoders] or any(
                te.config.hidden_size != pe.config.hidden_size
                for te, pe in zip(self.text_encoders, pipe_encoders)
            ):
                raise ValueError(
                    "text_encoders must match the pipeline's "
                    f"({', '.join(type(te).__name__ for te in pipe_encoders)}), one each"
                )
        for te in self.text_encoders:
            te.eval()
        self.device = torch.device(getattr(pipe, "_execution_device", None) or pipe.device)
        for enc in self.encoders:
            enc.phi.to(self.text_encoders[0].device).eval()
        self.steps, self.guidance_scale = int(steps), guidance_scale
        self.height, self.width = int(height), int(width)
        self.output_size = None if output_size is None else int(output_size)
        self.prompt, self.batch_size, self.pad_id = prompt, int(batch_size), pad_id
        self.progress = progress
        self._components = dict(components) if components is not None else None
        self._signature: dict[str, Any] | None = None

    @staticmethod
    def _placeholder_id(tokenizer: Any, name: str) -> int:
        ids = tokenizer(PLACEHOLDER, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            raise ValueError(
                f"the tokenizer of {name} has no single token for a free-standing {PLACEHOLDER!r} (got ids "
                f"{ids}, unknown-token id {tokenizer.unk_token_id}); CLIP's vocabulary has '$</w>' (259)"
            )
        return int(ids[0])

    # ----------------------------------------------------------------- identity
    @property
    def signature(self) -> dict[str, Any]:
        """JSON content key of everything that changes the images: the models (files or content
        hashes), the sampling settings, the prompt, dtype, device type (a CUDA generator draws other
        noise than a CPU one) and the diffusers / transformers versions (schedulers change)."""
        if self._signature is None:
            import diffusers
            import transformers

            components = self._components
            if components is None:
                components = _modules_identity(self.pipe, self.encoders, self.text_encoders)
            self._signature = {
                "generator": "cig-paper",
                "kind": self.kind,
                "components": components,
                "input_normalized": [bool(e.input_normalized) for e in self.encoders],
                "steps": self.steps,
                "guidance_scale": self.guidance_scale,
                "height": self.height,
                "width": self.width,
                "output_size": self.output_size,
                "prompt": self.prompt,
                "pad_id": self.pad_id,
                "dtype": str(self.pipe.unet.dtype).removeprefix("torch."),
                "text_dtype": "float32",
                "device": self.device.type,
                "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__},
            }
            json.dumps(self._signature)  # fail here, not in a cache writer, if something is not JSON
        return self._signature

    # ----------------------------------------------------------------- conditioning
    def composed_prompts(self, texts: Sequence[str]) -> list[str]:
        """``prompt`` with each text in place of ``{text}``; PlaceholderError (a ValueError) if a
        result does not hold ``$`` exactly once (a text containing ``$``)."""
        from cirlib.models.clip import PlaceholderError

        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        out = []
        for i, text in enumerate(texts):
            composed = self.prompt.replace("{text}", text)
            if composed.count(PLACEHOLDER) != 1:
                raise PlaceholderError(
                    f"text {i} {text!r}: the composed prompt {composed!r} contains the placeholder "
                    f"{PLACEHOLDER!r} {composed.count(PLACEHOLDER)} times; it must contain it exactly once"
                )
            out.append(composed)
        return out

    def tokenize(self, texts: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per text encoder: ``(input_ids, attention_mask)`` ``[N, 77]`` of the composed prompts, as
        ``encode_prompt`` tokenises (max-length padding, truncation), then ``pad_id`` after the
        end-of-text token. PlaceholderError when a prompt does not keep exactly one placeholder
        token (e.g. truncated away)."""
        from cirlib.models.clip import PlaceholderError

        prompts = self.composed_prompts(texts)
        # Free-standing, so that BPE keeps it one token ('$.' would merge); CLIP collapses the spaces.
        spaced = [p.replace(PLACEHOLDER, f" {PLACEHOLDER} ") for p in prompts]
        out = []
        for tok, pid, name in zip(self.tokenizers, self.placeholder_ids, self.text_encoder_names):
            enc = tok(
                spaced,
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            ids, mask = enc.input_ids, enc.attention_mask
            whole = tok(spaced).input_ids  # untruncated, to say why a placeholder is missing
            counts = (ids == pid).sum(dim=1)
            for i in torch.nonzero(counts != 1).flatten().tolist():
                why = (
                    f"is truncated away (the prompt is {len(whole[i])} tokens, {name}'s tokenizer keeps "
                    f"{tok.model_max_length})"
                    if whole[i].count(pid) == 1
                    else f"is {whole[i].count(pid)} tokens after tokenising, not one"
                )
                raise PlaceholderError(f"text {i} {texts[i]!r}: the placeholder {PLACEHOLDER!r} {why}")
            n_long = sum(len(w) > tok.model_max_length for w in whole)
            if n_long:
                log.warning(
                    "%s: %d of %d composed prompts are longer than %d tokens and are truncated (their end "
                    "is dropped), as diffusers and clip.tokenize(truncate=True) do",
                    name,
                    n_long,
                    len(spaced),
                    tok.model_max_length,
                )
            if self.pad_id is not None:
                first_eos = (ids == tok.eos_token_id).int().argmax(dim=1)
                after = torch.arange(ids.shape[1]).unsqueeze(0) > first_eos.unsqueeze(1)
                ids = ids.masked_fill(after, self.pad_id)
            out.append((ids, mask))
        return out

    def pseudo_tokens(self, references: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per text encoder: the pseudo tokens ``[N, hidden]`` (float32) of uint8 RGB references of
        any size: ``phi(image features)``, raw features unless the encoder's ``input_normalized``."""
        _check_references(references)
        if not len(references):
            return [torch.zeros(0, te.config.hidden_size) for te in self.text_encoders]
        out = []
        for enc in self.encoders:
            normalize = bool(enc.input_normalized)
            if enc.clip.preprocess == "pil":  # open_clip's transform, image by image: any sizes
                feats = enc.clip.encode_images(list(references), normalize=normalize)
            elif len({im.shape for im in references}) <= 1:
                feats = enc.clip.encode_images(np.stack(list(references)), normalize=normalize)
            else:  # the tiny profile's tensor preprocessing needs one size per batch
                feats = torch.cat(
                    [enc.clip.encode_images(im[None], normalize=normalize) for im in references]
                )
            device = next(enc.phi.parameters()).device
            feats = feats.to(device=device, dtype=torch.float32)
            with torch.inference_mode():
                tokens = enc.phi.pseudo_tokens(feats) if hasattr(enc.phi, "pseudo_tokens") else enc.phi(feats)
            out.append(tokens.float())
        return out

    def encode_with_pseudo_tokens(
        self, texts: Sequence[str], tokens: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(prompt_embeds, pooled_prompt_embeds)`` of the composed prompts with ``tokens[k][i]``
        written in place of ``$`` in text encoder ``k`` (pooled is None for SD 1.x), in the pipeline's
        dtype, on its device: exactly what the pipeline's ``encode_prompt`` builds for a prompt,
        computed in float32."""
        if len(tokens) != len(self.text_encoders):
            raise ValueError(
                f"need {len(self.text_encoders)} token tensors (one per text encoder), got {len(tokens)}"
            )
        batch = self.tokenize(texts)
        hidden, pooled = [], None
        with torch.inference_mode():
            for k, (te, pid, (ids, mask), pseudo) in enumerate(
                zip(self.text_encoders, self.placeholder_ids, batch, tokens)
            ):
                if tuple(pseudo.shape) != (len(texts), te.config.hidden_size):
                    raise ValueError(
                        f"tokens for {self.text_encoder_names[k]} must be [{len(texts)}, {te.config.hidden_size}], "
                        f"got {list(pseudo.shape)}"
                    )
                ids = ids.to(te.device)
                with _placeholder_replaced(te, pid, pseudo.to(te.device, torch.float32)):
                    if self.kind == "sdxl":
                        out = te(ids, output_hidden_states=True)
                        # SDXL conditions on the penultimate layer (diffusers encode_prompt, clip_skip None;
                        # CIG's x[1][-2]), and pools from the last encoder's projection.
                        hidden.append(out.hidden_states[-2])
                        if k == len(self.text_encoders) - 1:
                            pooled = out.text_embeds
                    else:
                        use_mask = getattr(te.config, "use_attention_mask", False)
                        out = te(ids, attention_mask=mask.to(te.device) if use_mask else None)
                        hidden.append(out[0])  # SD 1.x: the last hidden state
        if self.kind == "sdxl":
            dtype = self.pipe.text_encoder_2.dtype  # encode_prompt casts to text_encoder_2's dtype
        else:
            dtype = self.pipe.text_encoder.dtype
        prompt_embeds = torch.cat(hidden, dim=-1).to(self.device, dtype)
        return prompt_embeds, None if pooled is None else pooled.to(self.device, dtype)

    def prompt_embeddings(
        self, references: Sequence[np.ndarray], texts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(prompt_embeds, pooled_prompt_embeds or None)`` conditioning the pipeline on each
        reference image and text (see :meth:`encode_with_pseudo_tokens`)."""
        if len(references) != len(texts):
            raise ValueError(f"{len(references)} references but {len(texts)} texts")
        return self.encode_with_pseudo_tokens(texts, self.pseudo_tokens(references))

    # ----------------------------------------------------------------- sampling
    def _sample(
        self, prompt_embeds: torch.Tensor, pooled: torch.Tensor | None, seeds: Sequence[int]
    ) -> np.ndarray:
        kwargs: dict[str, Any] = {
            "prompt_embeds": prompt_embeds,
            "num_inference_steps": self.steps,
            "height": self.height,
            "width": self.width,
            # one generator per image: its noise does not depend on the rest of the batch
            "generator": [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds],
            "output_type": "np",
        }
        if pooled is not None:
            kwargs["pooled_prompt_embeds"] = pooled
        if self.guidance_scale is not None:  # None: the pipeline's default, as CIG never sets it
            kwargs["guidance_scale"] = float(self.guidance_scale)
        images = self.pipe(**kwargs).images
        # As diffusers' numpy_to_pil (CIG saves PIL images); a NaN (fp16 VAE overflow) becomes black.
        return (
            (np.nan_to_num(np.asarray(images, dtype=np.float32)) * 255).round().clip(0, 255).astype(np.uint8)
        )

    def _resize(self, images: np.ndarray) -> np.ndarray:
        size = self.output_size
        if size is None or images.shape[1:3] == (size, size):
            return images
        from PIL import Image

        return np.stack(
            [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in images]
        )

    def generate(
        self, references: Sequence[np.ndarray], texts: Sequence[str], seeds: Sequence[int]
    ) -> np.ndarray:
        """uint8 images ``[N, H, W, 3]`` (``output_size`` square, else the pipeline's height x width),
        one per (reference, text, seed), generated ``batch_size`` at a time."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        references, texts, seeds = list(references), list(texts), [int(s) for s in seeds]
        if not len(references) == len(texts) == len(seeds):
            raise ValueError(
                f"{len(references)} references, {len(texts)} texts and {len(seeds)} seeds differ in number"
            )
        _check_references(references)
        self.composed_prompts(texts)  # every placeholder error before the first (slow) batch
        h, w = (self.output_size, self.output_size) if self.output_size else (self.height, self.width)
        out = np.zeros((len(references), h, w, 3), dtype=np.uint8)
        from cirlib.config import progress_bar

        starts = range(0, len(references), self.batch_size)
        with torch.inference_mode():
            for start in progress_bar(starts, desc="generate (CIG)", show=self.progress and len(starts) > 1):
                sl = slice(start, start + self.batch_size)
                prompt_embeds, pooled = self.prompt_embeddings(references[sl], texts[sl])
                out[sl] = self._resize(self._sample(prompt_embeds, pooled, seeds[sl]))
        return out

    def __repr__(self) -> str:
        return (
            f"StableDiffusionComposedGenerator(kind={self.kind!r}, steps={self.steps}, "
            f"guidance_scale={self.guidance_scale}, size={self.height}x{self.width}, "
            f"output_size={self.output_size}, prompt={self.prompt!r})"
        )


# --------------------------------------------------------------------------- loading
def load_paper_cig_generator(
    pipeline_dir: str | Path,
    kind: Literal["sd15", "sdxl"] = "sdxl",
    *,
    weights: str | Path | None = None,
    unet: str | Path | None = None,
    vae: str | Path | None = None,
    phis: Sequence[str | ReleasedPhi] | None = None,
    steps: int = 50,
    guidance_scale: float | None = None,
    height: int = 512,
    width: int = 512,
    output_size: int | None = None,
    prompt: str = CIG_PROMPT,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 4,
    pad_with_zeros: bool | None = None,
    progress: bool = False,
) -> StableDiffusionComposedGenerator:
    """CIG's generator from local files (defaults: CIG's settings; CPU float32 here, CIG ran float16
    on CUDA).

    ``pipeline_dir``: the SDXL (``kind="sdxl"``) or SD 1.x (``"sd15"``) pipeline folder; ``unet``:
    CIG's fine-tuned UNet (its ``{model_path}`` or ``{model_path}/unet``); ``vae``: e.g.
    ``madebyollin/sdxl-vae-fp16-fix`` saved locally; ``weights``: the folder with the CLIP backbones'
    and the phis' weights files (default ``$CIRLIB_WEIGHTS``); ``phis``: one released phi per text
    encoder (default :data:`CIG_PHIS`). ``pad_with_zeros``: pad after the end-of-text token with 0 as
    CIG's ``clip.tokenize`` does (default: yes for SDXL, whose UNet attends to all 77 positions; no for
    SD 1.x, which keeps its tokenizer's padding). Every input is checked first
    (:func:`resolve_generator_files`): all missing ones raise one :class:`MissingGeneratorFilesError`
    before diffusers or transformers is imported."""
    files = resolve_generator_files(pipeline_dir, kind, weights=weights, unet=unet, vae=vae, phis=phis)
    components = files_identity(files)
    from cirlib.models.paper import load_clip
    from cirlib.models.released import load_released_phi

    # phis first: a wrong checkpoint fails in a second, not after loading gigabytes of pipeline
    loaded = [
        (load_released_phi(spec, phi_path), spec, clip_path) for spec, phi_path, clip_path in files.phis
    ]
    encoders = [
        PseudoTokenEncoder(
            load_clip(spec.backbone, profile="paper", weights=clip_path).to(device),
            phi,
            spec.input_normalized,
        )
        for phi, spec, clip_path in loaded
    ]
    pipe = load_sd_pipeline(files.pipeline, kind, device=device, dtype=dtype, unet=files.unet, vae=files.vae)
    text_encoders = None
    if dtype != torch.float32:  # condition in float32 from the stored weights, as CIG does
        names = ["text_encoder", "text_encoder_2"] if kind == "sdxl" else ["text_encoder"]
        text_encoders = [
            type(getattr(pipe, n))
            .from_pretrained(files.pipeline / n, local_files_only=True, dtype=torch.float32)
            .to(device)
            for n in names
        ]
    if pad_with_zeros is None:
        pad_with_zeros = kind == "sdxl"
    return StableDiffusionComposedGenerator(
        pipe,
        encoders,
        steps=steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        output_size=output_size,
        prompt=prompt,
        batch_size=batch_size,
        pad_id=CLIP_TOKENIZE_PAD_ID if pad_with_zeros else None,
        text_encoders=text_encoders,
        components=components,
        progress=progress,
    )


__all__ = [
    "CIG_PHIS",
    "CIG_PROMPT",
    "CLIP_TOKENIZE_PAD_ID",
    "GeneratorFiles",
    "MissingGeneratorFilesError",
    "PseudoTokenEncoder",
    "StableDiffusionComposedGenerator",
    "files_identity",
    "load_paper_cig_generator",
    "resolve_generator_files",
]
