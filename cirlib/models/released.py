"""The publicly released textual-inversion networks (phi) of SEARLE, LinCIR and Pic2Word, as data.

Each :class:`ReleasedPhi` records one public checkpoint: which file, where it is published, the
upstream key layout, the architecture, whether phi expects L2-normalised image features and the
prompt each method's official evaluation composes its query with. :func:`load_released_phi` reads
the file the user put in the weights folder and returns our :class:`cirlib.models.phi.Phi` with
identical outputs; cirlib never downloads it. Facts were read from the upstream code
(``miccunifi/SEARLE``: ``hubconf.py``, ``src/phi.py``, ``src/utils.py``, ``src/validate.py``,
``src/train_phi.py``; ``navervision/lincir``: ``models.py``, ``train_phi.py``, ``validate.py``,
``utils.py``, ``demo.py``, ``generate_test_submission.py``; ``lan-lw/ComposedImageGen``:
``extract_lincir_feat.py``; ``google-research/composed_image_retrieval``: ``model/model.py``,
``src/main.py``, ``src/params.py``, ``src/eval_retrieval.py``, ``src/eval_utils.py``, ``src/data.py``).

All four released phis were trained and are evaluated on the RAW (unnormalised) CLIP image
embedding: SEARLE's ``extract_pseudo_tokens_with_phi`` feeds ``clip_model.encode_image(images)``
straight to phi; LinCIR's feeds ``image_embeds`` of ``CLIPVisionModelWithProjection`` and normalises
only with ``--l2_normalize``, which neither its README commands nor its demo pass; CIG feeds
``image_embeds``; Pic2Word feeds ``m.encode_image(...)``. Hence ``input_normalized=False`` throughout.

Importing this module is cheap: torch is imported only inside the loading functions, so a command can
check every weights path (:func:`resolve_phi_weights`) before any model is built.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cirlib.models.weights import DEFAULT_BACKBONE, PAPER_BACKBONES, WEIGHTS_ENV, MissingWeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from cirlib.models.phi import Phi

#: Benchmark forms a prompt is recorded for (as :data:`cirlib.data.types.FORMS`).
PROMPT_FORMS: tuple[str, ...] = ("cirr", "circo", "fashioniq")


class ReleasedWeightsError(ValueError):
    """A released phi file does not have the upstream layout (wrong keys, shapes or content)."""


@dataclass(frozen=True, eq=False)
class ReleasedPhi:
    """One public phi checkpoint, as data.

    ``prompts`` maps each benchmark form to the official evaluation prompt with ``$`` for the pseudo
    word and ``{text}`` for the modification text (for FashionIQ, ``{text}`` is the two captions
    joined with " and ", in the order(s) ``fashioniq_captions`` says). ``arch`` are the keyword
    arguments of :class:`cirlib.models.phi.Phi`."""

    name: str
    method: str
    backbone: str
    filename: str
    source: str
    input_normalized: bool
    prompts: dict[str, str]
    arch: dict[str, Any]
    #: upstream key layout: ``"searle"`` (``layers.{0,3,6}`` of one Sequential, used by SEARLE, LinCIR
    #: and CIG) or ``"pic2word"`` (``layers.{i}.0`` blocks and ``fc_out``, Pic2Word's IM2TEXT)
    layout: Literal["searle", "pic2word"] = "searle"
    #: top-level key of the saved dict that holds the state dict
    container: str = "Phi"
    #: image preprocessing of the official evaluation scripts (their default)
    preprocess: Literal["clip", "targetpad"] = "clip"
    #: FashionIQ: ``"both_orders"`` averages the normalised query features of "c1 and c2" and
    #: "c2 and c1" (captions stripped of ".?, " first); ``"second_first"`` encodes "c2 and c1" once
    fashioniq_captions: Literal["both_orders", "second_first"] = "both_orders"
    #: the text encoder (token space) the pseudo word was trained for, as upstream names it
    text_encoder: str = ""
    notes: str = ""

    def prompt(self, form: str) -> str:
        """The official prompt for benchmark ``form`` (``cirr``, ``circo`` or ``fashioniq``)."""
        if form not in self.prompts:
            raise KeyError(f"{self.name}: no prompt for form {form!r}; forms: {', '.join(self.prompts)}")
        return self.prompts[form]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Our :class:`Phi` parameter names -> shapes, from ``arch`` (no torch needed)."""
        a = self.arch
        shapes: dict[str, tuple[int, ...]] = {}
        dim = a["input_dim"]
        for i in range(a["n_layers"]):
            shapes[f"layers.{3 * i}.weight"] = (a["hidden_dim"], dim)
            shapes[f"layers.{3 * i}.bias"] = (a["hidden_dim"],)
            dim = a["hidden_dim"]
        shapes["fc_out.weight"] = (a["output_dim"], dim)
        shapes["fc_out.bias"] = (a["output_dim"],)
        return shapes

    def key_map(self) -> dict[str, str]:
        """Upstream state-dict key (without a DDP ``module.`` prefix) -> our :class:`Phi` key."""
        n = self.arch["n_layers"]
        out: dict[str, str] = {}
        for suffix in ("weight", "bias"):
            for i in range(n):
                upstream = f"layers.{3 * i}.{suffix}" if self.layout == "searle" else f"layers.{i}.0.{suffix}"
                out[upstream] = f"layers.{3 * i}.{suffix}"
            out[f"layers.{3 * n}.{suffix}" if self.layout == "searle" else f"fc_out.{suffix}"] = (
                f"fc_out.{suffix}"
            )
        return out

    def build(self) -> Phi:
        """A randomly initialised :class:`Phi` of this architecture (eval mode)."""
        from cirlib.models.phi import Phi

        return Phi(**self.arch).eval()


def _searle_arch(dim: int, dropout: float) -> dict[str, Any]:
    return {
        "input_dim": dim,
        "output_dim": dim,
        "hidden_dim": 4 * dim,
        "n_layers": 2,
        "dropout": dropout,
        "activation": "gelu",
    }


#: SEARLE / LinCIR / CIG all use "a photo of $ that {text}" on every benchmark (validate.py and
#: generate_test_submission.py of both repos; extract_lincir_feat.py of CIG).
_THAT_PROMPTS = {form: "a photo of $ that {text}" for form in PROMPT_FORMS}
_CIG_SOURCE = (
    "CIG's released weights, Google Drive folder "
    "https://drive.google.com/drive/folders/1hpIpI0X26ox-uY-QdOPKDKKZlnWkftIA "
    "(lan-lw/ComposedImageGen README, 'Pretrained weights')"
)

_SPECS: tuple[ReleasedPhi, ...] = (
    ReleasedPhi(
        name="searle-vit-b32",
        method="searle",
        backbone="ViT-B-32",
        filename="SEARLE_ViT-B32.pt",
        source=(
            "https://github.com/miccunifi/SEARLE/releases/download/weights/SEARLE_ViT-B32.pt (the file "
            "torch.hub.load('miccunifi/SEARLE', 'searle', backbone='ViT-B/32') fetches; hubconf.py)"
        ),
        input_normalized=False,
        prompts=dict(_THAT_PROMPTS),
        arch=_searle_arch(512, 0.5),
        preprocess="targetpad",
        text_encoder="OpenAI CLIP ViT-B/32 (clip.load), '$' = token 259",
        notes="hubconf.py: Phi(512, 2048, 512, dropout=0.5); checkpoint dict key 'Phi' "
        "(phi.__class__.__name__), as train_phi.py's save_phi writes it next to 'epoch'.",
    ),
    ReleasedPhi(
        name="searle-xl-vit-l14",
        method="searle",
        backbone="ViT-L-14",
        filename="SEARLE_ViT-L14.pt",
        source=(
            "https://github.com/miccunifi/SEARLE/releases/download/weights/SEARLE_ViT-L14.pt (the file "
            "torch.hub.load('miccunifi/SEARLE', 'searle', backbone='ViT-L/14') fetches; hubconf.py)"
        ),
        input_normalized=False,
        prompts=dict(_THAT_PROMPTS),
        arch=_searle_arch(768, 0.5),
        preprocess="targetpad",
        text_encoder="OpenAI CLIP ViT-L/14 (clip.load), '$' = token 259",
        notes="SEARLE-XL. hubconf.py: Phi(768, 3072, 768, dropout=0.5); checkpoint dict key 'Phi'.",
    ),
    ReleasedPhi(
        name="lincir-vit-l14",
        method="lincir",
        backbone="ViT-L-14",
        filename="lincir_large.pt",
        source=(
            "https://huggingface.co/navervision/zeroshot-cir-models/blob/main/lincir_large.pt "
            "(LinCIR's demo model, linked from the navervision/lincir README; CC BY-NC 4.0; the paper's "
            "own checkpoints are not released, navervision/lincir#8)"
        ),
        input_normalized=False,
        prompts=dict(_THAT_PROMPTS),
        arch=_searle_arch(768, 0.5),
        preprocess="clip",
        text_encoder="HF CLIPTextModelWithProjection openai/clip-vit-large-patch14 (= open_clip "
        "ViT-L-14 'openai'), prompts tokenised with clip.tokenize, '$' = token 259",
        notes="models.py Phi is a copy of SEARLE's (layers.0/3/6); validate.py and demo.py load "
        "torch.load(path)['Phi']; train_phi.py saves accelerator.unwrap_model(phi), so no 'module.' prefix.",
    ),
    ReleasedPhi(
        name="cig-lincir-vit-l14",
        method="lincir",
        backbone="ViT-L-14",
        filename="phi_best.pt",
        source=_CIG_SOURCE,
        input_normalized=False,
        prompts=dict(_THAT_PROMPTS),
        arch=_searle_arch(768, 0.0),
        preprocess="clip",
        text_encoder="HF CLIPTextModelWithProjection openai/clip-vit-large-patch14 (= open_clip "
        "ViT-L-14 'openai')",
        notes="CIG's LinCIR phi for ViT-L/14: extract_lincir_feat.py builds Phi(768, 3072, 768, dropout=0) "
        "and loads torch.load(path)['Phi']. CIG's own phi.py is not in the index: its layout is taken to "
        "be LinCIR's (same constructor signature, same 'Phi' class name), UNVERIFIED.",
    ),
    ReleasedPhi(
        name="lincir-vit-bigg14",
        method="lincir",
        backbone="ViT-bigG-14",
        filename="phi_best_giga.pt",
        source=_CIG_SOURCE,
        input_normalized=False,
        prompts=dict(_THAT_PROMPTS),
        arch=_searle_arch(1280, 0.0),
        preprocess="clip",
        text_encoder="HF CLIPTextModelWithProjection Geonmo/CLIP-Giga-config-fixed (LinCIR's 'giga')",
        notes="CIG's LinCIR phi for the bigG ('giga') CLIP: Phi(1280, 5120, 1280, dropout=0), key 'Phi' "
        "(extract_lincir_feat.py). That Geonmo/CLIP-Giga-config-fixed holds the same weights as "
        "open_clip ViT-bigG-14 laion2b_s39b_b160k is UNVERIFIED. LinCIR's own bigG checkpoint is not "
        "released.",
    ),
    ReleasedPhi(
        name="pic2word-vit-l14",
        method="pic2word",
        backbone="ViT-L-14",
        filename="pic2word_model.pt",
        source=(
            "pic2word_model.pt: the Google Drive link of google-research/composed_image_retrieval is dead "
            "(issue #30); community mirrors named there: https://huggingface.co/flashingtt/pic2word and "
            "https://drive.google.com/file/d/1Bza7SFAnokXy-dOgxkL346lDXXz8DxMy (Pter61/context-i2w#16)"
        ),
        input_normalized=False,
        prompts={
            "cirr": "a photo of $ , {text}",
            # Pic2Word has no CIRCO evaluation; its CIRR prompt form is used (not official).
            "circo": "a photo of $ , {text}",
            "fashioniq": "a photo of $ , {text}",
        },
        arch={
            "input_dim": 768,
            "output_dim": 768,
            "hidden_dim": 512,
            "n_layers": 2,
            "dropout": 0.1,
            "activation": "relu",
        },
        layout="pic2word",
        container="state_dict_img2text",
        preprocess="clip",
        fashioniq_captions="second_first",
        text_encoder="OpenAI CLIP ViT-L/14 (Pic2Word's model/clip.py load), placeholder '*' "
        "(tokenize(['*'])[0][1]); '$' gives the same token count",
        notes="IM2TEXT(embed_dim=768, middle_dim=512 (--middle_dim), output_dim=768, n_layer=2, "
        "dropout=0.1: main.py never passes --droprate); blocks Linear -> Dropout -> ReLU (equal to "
        "Linear -> ReLU -> Dropout). main.py saves {'epoch', 'name', 'state_dict' (the CLIP), "
        "'state_dict_img2text', 'optimizer'}; keys carry DDP's 'module.' prefix (eval_retrieval.py and "
        "LinCIR's loader strip it). Official prompts: CIRR 'a photo of * , {caption}', FashionIQ "
        "'a photo of * , {cap2} and {cap1}' (src/data.py); no CIRCO evaluation exists.",
    ),
)

#: registry name -> spec. :func:`released_for` returns the first spec of a (method, backbone), so the
#: method's own release comes before third-party ones (CIG's LinCIR ViT-L/14 phi).
RELEASED_PHIS: dict[str, ReleasedPhi] = {spec.name: spec for spec in _SPECS}


def released_phi(name: str) -> ReleasedPhi:
    """The spec registered as ``name`` (KeyError listing the names)."""
    if name not in RELEASED_PHIS:
        raise KeyError(f"unknown released phi {name!r}; known: {', '.join(RELEASED_PHIS)}")
    return RELEASED_PHIS[name]


def released_for(method: str, backbone: str) -> ReleasedPhi:
    """The released phi of ``method`` for backbone ``backbone`` (a key of ``PAPER_BACKBONES``)."""
    for spec in RELEASED_PHIS.values():
        if spec.method == method and spec.backbone == backbone:
            return spec
    have = "; ".join(f"{s.method} on {s.backbone} ({s.name})" for s in RELEASED_PHIS.values())
    raise KeyError(f"no released phi for method {method!r} on backbone {backbone!r}; released: {have}")


def select_released(method: str, backbone: str | None = None, name: str | None = None) -> ReleasedPhi:
    """The release a run uses: the one named ``name`` (which must belong to ``method`` and, when
    ``backbone`` is given, to that backbone), else ``method``'s own release for ``backbone`` (default
    :data:`~cirlib.models.weights.DEFAULT_BACKBONE`). KeyError for unknown names, ValueError for a
    mismatch; both name what exists."""
    if name is None:
        return released_for(method, backbone or DEFAULT_BACKBONE)
    spec = released_phi(name)
    if spec.method != method:
        raise ValueError(f"released phi {name!r} is a {spec.method} network, not {method}")
    if backbone is not None and spec.backbone != backbone:
        raise ValueError(f"released phi {name!r} was trained for {spec.backbone}, not backbone {backbone}")
    return spec


def to_upstream_checkpoint(spec: ReleasedPhi, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Our :class:`Phi` state dict in the upstream file layout of ``spec`` (container key, key names,
    Pic2Word's DDP ``module.`` prefix): the inverse of :func:`convert_state_dict`, for writing
    stand-in checkpoints (tests, the GPU check) that go through the real loading path."""
    prefix = "module." if spec.layout == "pic2word" else ""
    return {spec.container: {prefix + up: state_dict[ours] for up, ours in spec.key_map().items()}}


def _spec(spec_or_name: ReleasedPhi | str) -> ReleasedPhi:
    return spec_or_name if isinstance(spec_or_name, ReleasedPhi) else released_phi(spec_or_name)


# --------------------------------------------------------------------------- paths (no torch)
def expected_phi_path(spec_or_name: ReleasedPhi | str, folder: Path | str) -> Path:
    """Where the file of a released phi is expected in the weights folder ``folder``."""
    return Path(folder).expanduser() / _spec(spec_or_name).filename


def resolve_phi_weights(spec_or_name: ReleasedPhi | str, weights: Path | str | None = None) -> Path:
    """The local file of a released phi: ``weights`` itself if it is a file, else
    :func:`expected_phi_path` in the folder ``weights`` (default ``$CIRLIB_WEIGHTS``). Raises
    :class:`MissingWeightsError` naming the expected path and where to get the file."""
    spec = _spec(spec_or_name)
    how = (
        f"get {spec.filename} from {spec.source} and put it in the weights folder (--weights DIR or "
        f"{WEIGHTS_ENV}=DIR). cirlib never downloads weights."
    )
    what = f"released phi {spec.name} ({spec.method}, {spec.backbone})"
    source = weights if weights is not None else os.environ.get(WEIGHTS_ENV)
    if source is None:
        raise MissingWeightsError(f"{what} needs its weights file, and no weights folder was given; {how}")
    source = Path(source).expanduser()
    if source.is_file():
        return source
    path = expected_phi_path(spec, source)
    if path.is_file():
        return path
    raise MissingWeightsError(f"{what}: {path} does not exist; {how}")


# --------------------------------------------------------------------------- conversion
def _fmt(keys: Any, limit: int = 12) -> str:
    keys = sorted(str(k) for k in keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def convert_state_dict(
    spec: ReleasedPhi, raw: Mapping[str, Any], *, source: Path | str | None = None
) -> dict[str, torch.Tensor]:
    """Upstream checkpoint (as ``torch.load`` returns it, or its bare state dict) -> the state dict of
    our :class:`Phi`, float32. Strict: a missing or unexpected key, a non-tensor, a non-float tensor or
    a wrong shape raises :class:`ReleasedWeightsError` naming the file and the keys. A DDP
    ``module.`` prefix on every key is removed (Pic2Word's checkpoints carry one)."""
    import torch

    where = str(source) if source is not None else spec.filename
    if not isinstance(raw, Mapping):
        raise ReleasedWeightsError(
            f"{where}: holds a {type(raw).__name__}, not the dict {spec.name} checkpoints are saved as"
        )
    if isinstance(raw.get(spec.container), Mapping):
        state = raw[spec.container]
    elif raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state = raw  # a bare state dict
    else:
        raise ReleasedWeightsError(
            f"{where}: no state dict under key {spec.container!r} (the key {spec.name} checkpoints store "
            f"phi under); top-level keys: {_fmt(raw)}"
        )
    keys = [str(k) for k in state]
    if keys and all(k.startswith("module.") for k in keys):
        state = {str(k)[len("module.") :]: v for k, v in state.items()}
    key_map = spec.key_map()
    unexpected = set(state) - set(key_map)
    missing = set(key_map) - set(state)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        raise ReleasedWeightsError(
            f"{where}: not the {spec.layout}-layout phi of {spec.name}; {'; '.join(parts)} "
            f"(expected exactly: {_fmt(key_map)})"
        )
    shapes = spec.param_shapes()
    out: dict[str, torch.Tensor] = {}
    for upstream, ours in key_map.items():
        value = state[upstream]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            desc = f"{value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ReleasedWeightsError(f"{where}: {upstream} is a {desc}, not a float tensor")
        if tuple(value.shape) != shapes[ours]:
            raise ReleasedWeightsError(
                f"{where}: {upstream} has shape {list(value.shape)}, expected {list(shapes[ours])} for "
                f"{spec.name} (arch {spec.arch}); is this the checkpoint of another backbone?"
            )
        out[ours] = value.detach().to(torch.float32).contiguous()
    return out


def read_checkpoint(path: Path | str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a file that needs arbitrary
    unpickling (or is not a torch file) raises :class:`ReleasedWeightsError` naming it."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "WeightsUnpickler error:" in ln]
        detail = lines[0].split("WeightsUnpickler error:", 1)[1].split(". ")[0].strip() if lines else ""
        raise ReleasedWeightsError(
            f"{path}: torch.load(weights_only=True) refused it ({detail or 'not a torch checkpoint'}); "
            "released phi checkpoints hold only tensors and plain containers, and cirlib never unpickles "
            "arbitrary objects"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ReleasedWeightsError(f"{path}: cannot be read as a torch checkpoint ({err})") from err


def load_released_phi(spec_or_name: ReleasedPhi | str, weights: Path | str | None = None) -> Phi:
    """Our :class:`Phi`, in eval mode, with the weights of a released phi (file or folder ``weights``,
    default ``$CIRLIB_WEIGHTS``). The spec is attached as ``phi.released`` and the file as
    ``phi.weights_path``. Feed it image features normalised or not as ``phi.released.input_normalized``
    says (all released phis take the raw CLIP image embedding)."""
    spec = _spec(spec_or_name)
    if spec.backbone not in PAPER_BACKBONES:  # pragma: no cover - guarded by tests
        raise KeyError(f"{spec.name}: backbone {spec.backbone!r} is not a paper backbone")
    path = resolve_phi_weights(spec, weights)  # raises before torch is imported
    state = convert_state_dict(spec, read_checkpoint(path), source=path)
    phi = spec.build()
    phi.load_state_dict(state, strict=True)
    phi.eval()
    phi.released = spec  # type: ignore[attr-defined]
    phi.weights_path = str(path)  # type: ignore[attr-defined]
    return phi


__all__ = [
    "PROMPT_FORMS",
    "RELEASED_PHIS",
    "ReleasedPhi",
    "ReleasedWeightsError",
    "convert_state_dict",
    "select_released",
    "to_upstream_checkpoint",
    "expected_phi_path",
    "load_released_phi",
    "read_checkpoint",
    "released_for",
    "released_phi",
    "resolve_phi_weights",
]
