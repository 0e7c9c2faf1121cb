"""The tiny profile's image captioner: IP-CIR's BLIP-2, replaced by a ClipCap-style decoder.

IP-CIR ("Imagine and Seek", CVPR 2025) captions the reference image with BLIP-2 and hands the
caption, with the modification text, to an LLM that imagines the target. Offline, in the tiny
profile, a small captioner trained here takes BLIP-2's place. Its design is ClipCap's: a frozen CLIP
image representation, one vector per image, is mapped by a small MLP to a few prefix embeddings, and
a GPT-2 decoder (:class:`~cirlib.models.decoders.TextDecoder`) writes the caption after them.

Which representation: ClipCap reads the global image embedding, but the tiny CLIP's global
embedding does not hold what a dense caption needs. Measured on 20,000 / 1,000 world images, an MLP
probe on it reads every colour (100%) and the object count (87%), but shape presence (69-74% against
66-71% for the majority guess) and cell occupancy (at chance) not at all, and a captioner trained on
it names 2% of the objects right (background 99.8%). The final-layer patch tokens of the same
forward pass (:meth:`~cirlib.models.clip.CLIPModel.encode_pixels_with_tokens`, 8x8 tokens of width
128, flattened to one 8,192-d vector) keep the layout: a linear probe reads occupancy (100%), colour
(99.8%), size (94%) and shape (55%) per cell. So the prefix reads the flattened patch tokens
(``prefix="tokens"``, the default); ``prefix="global"`` (ClipCap's own choice) is kept for the
comparison. BLIP-2 likewise reads its ViT's patch tokens (through the Q-Former), not a pooled vector.

With the defaults (20,000 pairs, 2,000 steps), on 1,000 held-out scenes: 99% of the objects are
placed in the right cell, with the right size 81%, colour 77% and shape 23% of the time (shape is
where the tiny CLIP itself is weakest); 18% of the object clauses are right in every word, the
background 99.5%, and 10% of the captions are exact (31% of the one-object scenes).

It is trained on image-caption pairs only (as BLIP-2 was), never on CIR triplets: rendered world
scenes with their dense caption (:func:`~cirlib.world.language.dense_caption`), the complete,
canonical, COCO-style description "a large red circle in the top left corner and a small blue star
in the center on a striped background". The CLIP it reads is the same frozen tiny CLIP every
method uses, so the captioner knows no more about an image than that CLIP's features hold.

* :func:`caption_vocab`: the closed word vocabulary of dense captions;
* :func:`captioning_pairs`: rendered images with their dense captions;
* :func:`train_captioner` (:class:`CaptionerTrainConfig`): resumable, deterministic training;
* :class:`TinyCaptioner`: the :class:`~cirlib.generation.layout.Captioner` of the tiny profile;
* :func:`caption_quality`: exact match and per-fact recall / precision against the scene.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cirlib.config import progress_bar
from cirlib.models.clip import (
    STATE_FILE,
    CLIPModel,
    EpochSampler,
    _check_uint8_batch,
    _param_groups,
    torch_threads,
)
from cirlib.models.decoders import (
    TextDecoder,
    build_vocab,
    load_decoder_state,
    set_dropout,
    train_decoder_steps,
)
from cirlib.world.language import (
    BACKGROUND_WORDS,
    CELL_NAMES,
    COLOR_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    dense_caption,
)
from cirlib.world.scene import Scene

#: Words that join the attribute words of a dense caption ("a", "an", "in the", "on a ... background",
#: ", " and "and" between objects).
GLUE_WORDS = "a an in the on background and ,"
#: Kind recorded in :attr:`TinyCaptioner.signature`.
CAPTIONER_KIND = "tiny-captioner"
#: What the prefix reads: the flattened final-layer patch tokens, or the normalised global embedding.
PrefixSource = Literal["tokens", "global"]
PREFIX_SOURCES: tuple[str, ...] = ("tokens", "global")


def caption_vocab() -> list[str]:
    """The vocabulary of dense captions: the special tokens, then every canonical (first) word of
    sizes, colours, shapes, cell names and backgrounds, and the glue words, sorted (deterministic)."""
    canonical = [
        words[0]
        for table in (SIZE_WORDS, COLOR_WORDS, SHAPE_WORDS, CELL_NAMES, BACKGROUND_WORDS)
        for words in table.values()
    ]
    return build_vocab([*canonical, GLUE_WORDS])


def captioning_pairs(n: int, seed: int, image_size: int = 64) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``n`` rendered world images (uint8 ``[N, S, S, 3]``, the scenes and renders of
    :func:`~cirlib.world.benchmarks.pretraining_pairs`), their dense captions and their scenes.
    Image-caption pairs only: a captioner never sees a CIR triplet."""
    from cirlib.world.benchmarks import pretraining_pairs

    pairs = pretraining_pairs(n, seed, image_size)
    return pairs.images, [dense_caption(s) for s in pairs.scenes], list(pairs.scenes)


@dataclass(frozen=True)
class CaptionerTrainConfig:
    """Recipe and architecture of the tiny captioner (every field is part of the resume key).

    Defaults, measured on 2 shared CPU cores: a step (64 captions) takes 0.13 s with two threads,
    0.23 s with one, and encoding 20,000 images 45 s, so 2,000 steps on 20,000 pairs take about five
    minutes with both cores (about nine with one). Held-out quality still rises with steps (object
    clauses right: 9% after 1,200 steps, 17% after 1,800, 18% after 2,000), so the budget goes to
    steps: two layers for 2,000 steps beat four layers for 1,200 at the same cost (loss 0.19 vs
    0.23), and 12 prefix embeddings beat 8 slightly (object clauses 8.9% vs 8.3% at 1,200 steps)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip_norm: float = 1.0
    checkpoint_every: int = 250
    #: Dropout of the GPT-2 blocks during training (GPT-2's default is 0.1). Off: it costs a quarter of
    #: a step, and within its budget the captioner overfits little (held-out loss 0.22, training 0.17).
    dropout: float = 0.0
    #: What the prefix MLP reads (see the module docstring): ``tokens`` or ``global``.
    prefix: PrefixSource = "tokens"
    #: GPT-2 depth, width and heads of the decoder.
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    #: Prefix embeddings the image vector is mapped to (ClipCap's prefix length).
    prefix_tokens: int = 12
    #: Positions: prefix + ``<bos>`` + the longest dense caption (43 words) + ``<eos>`` fit in 64.
    n_positions: int = 64


def prefix_dim(clip: CLIPModel, source: str) -> int:
    """Size of the prefix vector the decoder reads from ``clip`` for ``source``: the embedding size
    (``global``) or patches x width (``tokens``)."""
    if source == "global":
        return clip.embed_dim
    if source == "tokens":
        visual = clip.model.visual
        grid = getattr(visual, "grid_size", None)
        if grid is None:
            raise TypeError(
                f"{type(visual).__name__} has no patch tokens (a ViT is needed for prefix='tokens')"
            )
        return int(grid[0] * grid[1] * visual.transformer.width)
    raise ValueError(f"prefix must be one of {PREFIX_SOURCES}, got {source!r}")


def prefix_source(clip: CLIPModel, decoder: TextDecoder) -> str:
    """Which prefix ``decoder`` reads, from its ``prefix_dim`` (the zoo stores it in the architecture)."""
    dims = {source: prefix_dim(clip, source) for source in PREFIX_SOURCES}
    matches = [source for source, dim in dims.items() if dim == decoder.arch["prefix_dim"]]
    if len(matches) != 1:
        raise ValueError(
            f"the decoder's prefix reads {decoder.arch['prefix_dim']}-d vectors; this CLIP gives {dims}"
        )
    return matches[0]


def image_prefix(
    clip: CLIPModel, images: np.ndarray, source: str, batch_size: int = 512, progress: bool = False
) -> torch.Tensor:
    """The decoder's prefix input ``[N, prefix_dim]`` (float32, CPU, where the decoder runs): the
    frozen CLIP's flattened final-layer patch tokens (``tokens``) or its L2-normalised global
    embedding (``global``). One function for training and captioning, so both read the same."""
    if source == "global":
        return clip.encode_images(images, batch_size=batch_size, normalize=True, progress=progress).cpu()
    dim = prefix_dim(clip, source)
    chunks = []
    for start in progress_bar(
        range(0, len(images), batch_size),
        desc="encode image tokens",
        show=progress and len(images) > batch_size,
    ):
        pixels = clip.preprocess_images(images[start : start + batch_size])
        _, tokens = clip.encode_pixels_with_tokens(pixels)
        chunks.append(tokens.reshape(len(tokens), -1))
    return torch.cat(chunks) if chunks else torch.zeros(0, dim)


def _check_images(images: Any) -> np.ndarray:
    array = np.asarray(images)
    _check_uint8_batch(array)  # the CLIP wrapper's check: uint8 [N,H,W,3]
    return array


def train_captioner(
    clip: CLIPModel,
    images: np.ndarray,
    captions: Sequence[str],
    config: CaptionerTrainConfig | None = None,
    seed: int = 0,
    *,
    resume_dir: Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    num_threads: int | None = None,
) -> TextDecoder:
    """Train a ClipCap-style captioner on image-caption pairs (uint8 ``[N,H,W,3]`` and captions).

    The frozen CLIP encodes every image once (:func:`image_prefix` of ``config.prefix``); the prefix
    vectors are standardised per dimension over the training images (folded into the prefix MLP's
    first layer at the end, so the returned decoder reads raw :func:`image_prefix` vectors). Each
    step then takes a batch of pairs and minimises the decoder's teacher-forced next-token loss on
    the caption (prompt ``[<bos>]``, answer the caption's ids, then ``<eos>``), with AdamW, a linear
    warm-up and cosine decay, and gradient clipping. Captions must use only :func:`caption_vocab`
    words (a ``ValueError`` names the first that does not).

    Deterministic given ``seed`` (and the thread count): the init is seeded, batches come from
    :class:`~cirlib.models.clip.EpochSampler` and torch is reseeded from ``(seed, step)`` before
    each forward (dropout masks). With ``resume_dir`` the full state (weights, AdamW moments, step,
    losses) is written atomically every ``config.checkpoint_every`` steps under a content key
    (config, seed, CLIP hash, data digest) and a later call continues from it, so a resumed run equals
    an uninterrupted one; a state with another key is an error (it belongs to another run).
    ``stop_after`` ends the run after that many total steps, saving the state (the returned decoder
    is then the partly trained one).

    Returns the decoder in eval mode on the CPU, with ``clip_hash`` set and ``training_losses``
    (one float per step) attached."""
    from cirlib.retrieval import content_digest

    config = config or CaptionerTrainConfig()
    dim = prefix_dim(clip, config.prefix)  # fails early on an unknown prefix source
    images = _check_images(images)
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    vocab = caption_vocab()
    with torch_threads(num_threads):
        torch.manual_seed(seed)
        decoder = TextDecoder(
            vocab,
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            n_positions=config.n_positions,
            prefix_dim=dim,
            prefix_tokens=config.prefix_tokens,
        )
        decoder.clip_hash = clip.hash
        set_dropout(decoder, config.dropout)
        tokenizer = decoder.tokenizer
        answers = []
        for i, caption in enumerate(captions):
            unknown = tokenizer.unknown_words(caption)
            if unknown:
                raise ValueError(
                    f"caption {i} {caption!r} has words outside the captioner's vocabulary: {unknown}"
                )
            answers.append(tokenizer.encode(caption))
        # prefix + <bos> + caption + <eos> must fit the position table.
        longest = max(len(a) for a in answers) + config.prefix_tokens + 2
        if longest > config.n_positions:
            raise ValueError(
                f"the longest caption needs {longest} positions; n_positions is {config.n_positions}"
            )
        optimiser = torch.optim.AdamW(_param_groups(decoder, config.weight_decay), lr=config.lr)
        key = content_digest([asdict(config), seed, clip.hash, content_digest([images, list(captions)])])
        state_path = Path(resume_dir) / STATE_FILE if resume_dir is not None else None
        start, losses = 0, []
        stats: tuple[torch.Tensor, torch.Tensor] | None = None
        state = load_decoder_state(state_path, key, decoder, optimiser)
        if state is not None:
            start, losses = int(state["step"]), list(state["losses"])
            stats = (state["prefix_mean"], state["prefix_scale"])

        end = config.steps if stop_after is None else min(config.steps, stop_after)
        prefix = torch.zeros(0, dim)
        if start < end or stats is None:
            # Standardised inputs (per dimension, over the training images): the patch tokens carry
            # channel offsets of up to +-2 against an image-to-image spread of ~0.6, which slowed the
            # prefix MLP down (measured: loss 0.47 after 1,500 raw steps, 0.36 after 600 standardised).
            prefix = image_prefix(clip, images, config.prefix, 512, progress)
            stats = (prefix.mean(dim=0), prefix.std(dim=0).clamp_min(1e-3))
            prefix = (prefix - stats[0]) / stats[1]
        mean, scale = stats

        sampler = EpochSampler(len(images), config.batch_size, seed)
        prompt = [tokenizer.bos_id]

        def batch(step: int) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
            index = sampler.batch(step)
            return [prompt] * len(index), [answers[i] for i in index], prefix[index]

        train_decoder_steps(
            decoder,
            optimiser,
            config,
            seed,
            batch,
            start=start,
            end=end,
            losses=losses,
            state_path=state_path,
            key=key,
            extra_state={"prefix_mean": mean, "prefix_scale": scale},
            desc="train captioner",
            progress=progress,
        )
        _fold_standardisation(decoder, mean, scale)
        decoder.eval()
        decoder.training_losses = losses  # type: ignore[attr-defined]
        return decoder


def _fold_standardisation(decoder: TextDecoder, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """Fold the input standardisation ``(x - mean) / scale`` into the prefix MLP's first linear layer
    (``W' = W / scale``, ``b' = b - W' mean``), so that the returned decoder reads raw prefix vectors
    and the zoo stores nothing beyond the decoder's own weights."""
    assert decoder.prefix is not None
    first = decoder.prefix[0]
    with torch.no_grad():
        weight = first.weight / scale
        first.bias.sub_(weight @ mean)
        first.weight.copy_(weight)


class TinyCaptioner:
    """The tiny profile's :class:`~cirlib.generation.layout.Captioner`: frozen CLIP embedding ->
    prefix -> greedy GPT-2 caption. The decoder is treated as frozen (its digest is taken once)."""

    def __init__(self, clip: CLIPModel, decoder: TextDecoder, batch_size: int = 512) -> None:
        from cirlib.retrieval import content_digest

        if decoder.clip_hash != clip.hash:
            raise ValueError(
                f"this captioner decoder was trained on the image embeddings of CLIP {decoder.clip_hash}, "
                f"not of this CLIP ({clip.hash}); train one for this CLIP"
            )
        self.prefix = prefix_source(clip, decoder)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.clip, self.decoder, self.batch_size = clip, decoder.eval(), batch_size
        weights = {k: v.detach().cpu().numpy() for k, v in decoder.state_dict().items()}
        self.signature: dict[str, Any] = {
            "kind": CAPTIONER_KIND,
            "decoder": content_digest([decoder.arch, weights])[:16],
            "clip": clip.hash,
            "prefix": self.prefix,
        }

    def caption(self, images: Sequence[np.ndarray] | np.ndarray) -> list[str]:
        """One greedy caption per uint8 ``[H, W, 3]`` image, in batches of ``batch_size``."""
        if len(images) == 0:
            return []
        array = _check_images(np.stack([np.asarray(im) for im in images]))
        bos = self.decoder.tokenizer.bos_id
        out: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(array), self.batch_size):
                chunk = array[start : start + self.batch_size]
                prefix = image_prefix(self.clip, chunk, self.prefix, self.batch_size)
                out += self.decoder.generate(
                    [[bos]] * len(chunk), prefix=prefix, max_new_tokens=self.decoder.arch["n_positions"]
                )
        return out


# --------------------------------------------------------------------------- quality
_BACKGROUND_RE = re.compile(r"^(?P<objects>.*?)\s*(?P<background>\bon an? [a-z ]+ background)$")
_OBJECT_SPLIT_RE = re.compile(r"\s*,\s*|\s+and\s+")
_CLAUSE_RE = re.compile(r"^an? (?P<size>\S+) (?P<color>\S+) (?P<shape>\S+) in the (?P<cell>.+)$")
_CELL_OF_NAME = {names[0]: cell for cell, names in CELL_NAMES.items()}


def caption_facts(caption: str) -> tuple[list[str], str | None]:
    """A dense caption's object clauses ("a large red circle in the top left corner", split at
    commas and "and") and its background clause ("on a striped background"; None if absent)."""
    text = " ".join(caption.strip().rstrip(".").split())
    match = _BACKGROUND_RE.match(text)
    objects, background = (match["objects"], match["background"]) if match else (text, None)
    return [c for c in _OBJECT_SPLIT_RE.split(objects) if c], background


def _clauses_by_cell(objects: Sequence[str]) -> dict[tuple[int, int], tuple[str, str, str]]:
    """(size, colour, shape) words of each well-formed object clause, by the cell it names (the
    first clause naming a cell wins)."""
    out: dict[tuple[int, int], tuple[str, str, str]] = {}
    for clause in objects:
        match = _CLAUSE_RE.match(clause)
        if match and match["cell"] in _CELL_OF_NAME:
            out.setdefault(_CELL_OF_NAME[match["cell"]], (match["size"], match["color"], match["shape"]))
    return out


def caption_quality(
    captioner: Any, images: Sequence[np.ndarray] | np.ndarray, scenes: Sequence[Scene]
) -> dict[str, float]:
    """How well ``captioner`` (any :class:`~cirlib.generation.layout.Captioner`) describes ``scenes``
    from their ``images``, against :func:`~cirlib.world.language.dense_caption`.

    A fact is an object clause or the background clause (:func:`caption_facts`). Returns, pooled
    over all captions (fractions in [0, 1]):

    * ``exact_match``: captions equal to the dense caption;
    * ``fact_recall`` / ``fact_precision``: true facts written / written facts that are true (a
      fact written twice counts once);
    * ``object_recall`` / ``object_precision``: the same over object clauses only;
    * ``background_accuracy``: captions with the right background clause;
    * ``wrong_object_count``: captions naming another number of objects than the scene holds;
    * ``cell_recall``: true objects whose cell some written clause names (where the object clauses
      fail, this and the three below say which part: place, size, colour or shape);
    * ``size_accuracy`` / ``color_accuracy`` / ``shape_accuracy``: among those, the clauses with the
      object's size / colour / shape word;
    * ``n``: the number of captions (not a fraction)."""
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    predicted = captioner.caption(images)
    if len(predicted) != len(scenes):
        raise ValueError(f"the captioner returned {len(predicted)} captions for {len(scenes)} images")
    exact = background_right = wrong_count = 0
    true_objects = written_objects = right_objects = 0
    true_facts = written_facts = right_facts = 0
    placed, attribute_right = 0, {"size": 0, "color": 0, "shape": 0}
    for caption, scene in zip(predicted, scenes, strict=True):
        truth = dense_caption(scene)
        exact += caption.strip() == truth
        objects, background = caption_facts(caption)
        true_obj, true_bg = caption_facts(truth)
        right_obj = sum((Counter(objects) & Counter(true_obj)).values())
        right_bg = background is not None and background == true_bg
        wrong_count += len(objects) != len(true_obj)
        background_right += right_bg
        true_objects += len(true_obj)
        written_objects += len(set(objects))
        right_objects += right_obj
        true_facts += len(true_obj) + 1
        written_facts += len(set(objects)) + (background is not None)
        right_facts += right_obj + right_bg
        written = _clauses_by_cell(objects)
        for obj in scene.objects:
            if obj.cell in written:
                placed += 1
                size, color, shape = written[obj.cell]
                attribute_right["size"] += size == SIZE_WORDS[obj.size][0]
                attribute_right["color"] += color == COLOR_WORDS[obj.color][0]
                attribute_right["shape"] += shape == SHAPE_WORDS[obj.shape][0]
    n = len(scenes)

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    return {
        "exact_match": ratio(exact, n),
        "fact_recall": ratio(right_facts, true_facts),
        "fact_precision": ratio(right_facts, written_facts),
        "object_recall": ratio(right_objects, true_objects),
        "object_precision": ratio(right_objects, written_objects),
        "background_accuracy": ratio(background_right, n),
        "wrong_object_count": ratio(wrong_count, n),
        "cell_recall": ratio(placed, true_objects),
        **{f"{k}_accuracy": ratio(v, placed) for k, v in attribute_right.items()},
        "n": n,
    }
