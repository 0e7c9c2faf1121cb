"""Small transformers text decoders for the tiny profile: IP-CIR's captioner and planner.

Both are GPT-2 language models (``transformers.GPT2LMHeadModel``) of a few hundred thousand
parameters over a closed word vocabulary. The captioner reads a CLIP image embedding mapped to a few
prefix embeddings (ClipCap's design); the planner reads text only, as an LLM does. Decoding is
greedy through ``model.generate``, batched with left padding, so a batch gives the same text as
one query at a time (tested).

:class:`WordTokenizer` splits on whitespace and punctuation and maps each word to an id; its vocabulary
is stored with the model (the architecture dict), so a checkpoint reads back exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from cirlib.config import progress_bar

PAD, BOS, EOS, UNK, SEP = "<pad>", "<bos>", "<eos>", "<unk>", "<sep>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK, SEP)
_WORD_RE = re.compile(r"<[a-z]+>|[A-Za-z0-9$]+|[^\sA-Za-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks (special tokens such as ``<sep>`` kept whole)."""
    return _WORD_RE.findall(text.lower())


def build_vocab(texts: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The special tokens, then every word of ``texts`` and ``extra``, sorted (deterministic)."""
    words = {w for t in texts for w in split_words(t)} | set(extra)
    return list(SPECIALS) + sorted(words - set(SPECIALS))


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary (unknown words map to ``<unk>``)."""

    def __init__(self, vocab: Sequence[str]) -> None:
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"a vocabulary starts with the special tokens {SPECIALS}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise ValueError("the vocabulary has repeated words")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id, self.sep_id = range(len(SPECIALS))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in split_words(text)]

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in split_words(text) if w not in self.index]

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by spaces, stopping at ``<eos>``, skipping other special tokens; no space
        before ``, ] :`` or after ``[``."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i < len(SPECIALS):
                continue
            words.append(self.vocab[i])
        text = " ".join(words)
        for a, b in ((" ,", ","), (" :", ":"), ("[ ", "["), (" ]", "]"), (" .", ".")):
            text = text.replace(a, b)
        return text


class TextDecoder(nn.Module):
    """A GPT-2 decoder with an optional prefix mapper (``prefix_dim > 0``: ClipCap-style, a vector
    such as a CLIP image embedding becomes ``prefix_tokens`` input embeddings).

    ``arch`` holds the constructor arguments, the vocabulary included (what the zoo stores)."""

    def __init__(
        self,
        vocab: Sequence[str],
        n_layer: int = 2,
        n_embd: int = 128,
        n_head: int = 4,
        n_positions: int = 128,
        prefix_dim: int = 0,
        prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.arch: dict[str, Any] = {
            "vocab": list(vocab),
            "n_layer": n_layer,
            "n_embd": n_embd,
            "n_head": n_head,
            "n_positions": n_positions,
            "prefix_dim": prefix_dim,
            "prefix_tokens": prefix_tokens,
        }
        self.tokenizer = WordTokenizer(vocab)
        t = self.tokenizer
        config = GPT2Config(
            vocab_size=len(t),
            n_positions=n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            bos_token_id=t.bos_id,
            eos_token_id=t.eos_id,
            pad_token_id=t.pad_id,
        )
        self.lm = GPT2LMHeadModel(config)
        self.prefix = (
            nn.Sequential(
                nn.Linear(prefix_dim, n_embd * prefix_tokens // 2),
                nn.Tanh(),
                nn.Linear(n_embd * prefix_tokens // 2, n_embd * prefix_tokens),
            )
            if prefix_dim
            else None
        )
        #: :attr:`CLIPModel.hash` of the CLIP whose embeddings the prefix reads (None: text only).
        self.clip_hash: str | None = None

    # ------------------------------------------------------------------ inputs
    def _prefix_embeds(self, prefix: torch.Tensor | None, n: int) -> torch.Tensor:
        width = self.arch["n_embd"]
        if self.prefix is None:
            if prefix is not None:
                raise ValueError("this decoder takes no prefix vector")
            return torch.zeros(n, 0, width)
        if prefix is None or prefix.shape != (n, self.arch["prefix_dim"]):
            raise ValueError(f"expected a prefix of shape ({n}, {self.arch['prefix_dim']})")
        return self.prefix(prefix.float()).view(n, self.arch["prefix_tokens"], width)

    def _left_padded(
        self, prompts: Sequence[list[int]], prefix: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs_embeds`` and ``attention_mask`` of prefix + prompt ids, padded on the left."""
        n = len(prompts)
        pre = self._prefix_embeds(prefix, n)
        length = max(len(p) for p in prompts) + pre.shape[1]
        embeds = torch.zeros(n, length, self.arch["n_embd"])
        mask = torch.zeros(n, length, dtype=torch.long)
        table = self.lm.get_input_embeddings()
        for i, ids in enumerate(prompts):
            row = torch.cat([pre[i], table(torch.tensor(ids, dtype=torch.long))]) if ids else pre[i]
            embeds[i, length - len(row) :] = row
            mask[i, length - len(row) :] = 1
        return embeds, mask

    # ------------------------------------------------------------------ training
    def loss(
        self, prompts: Sequence[list[int]], answers: Sequence[list[int]], prefix: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean next-token cross-entropy on the answer tokens (and the closing ``<eos>``) given the
        prefix and prompt (teacher forcing); prompt tokens carry no loss."""
        t = self.tokenizer
        rows = [p + a + [t.eos_id] for p, a in zip(prompts, answers, strict=True)]
        embeds, mask = self._left_padded(rows, prefix)
        labels = torch.full(mask.shape, -100, dtype=torch.long)
        for i, a in enumerate(answers):
            n_answer = len(a) + 1
            labels[i, mask.shape[1] - n_answer :] = torch.tensor(a + [t.eos_id])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, labels=labels).loss

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[list[int]], prefix: torch.Tensor | None = None, max_new_tokens: int = 64
    ) -> list[str]:
        """Greedy completions of the prompts (after the optional prefix), decoded to text."""
        if not prompts:
            return []
        embeds, mask = self._left_padded(prompts, prefix)
        room = self.arch["n_positions"] - embeds.shape[1]
        if room <= 0:
            raise ValueError(
                f"prompt of {embeds.shape[1]} positions leaves no room ({self.arch['n_positions']})"
            )
        t = self.tokenizer
        out = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=min(max_new_tokens, room),
            do_sample=False,
            eos_token_id=t.eos_id,
            pad_token_id=t.pad_id,
        )
        return [t.decode(row) for row in out.tolist()]


# --------------------------------------------------------------------------- training
#: torch is reseeded from ``seed * SEED_STRIDE + step`` before each training step, so that dropout
#: masks are a function of ``(seed, step)`` alone and a resumed run equals an uninterrupted one.
SEED_STRIDE = 1_000_003


class DecoderRecipe(Protocol):
    """The fields of a decoder training config that :func:`train_decoder_steps` reads."""

    steps: int
    lr: float
    warmup_steps: int
    grad_clip_norm: float
    checkpoint_every: int


def set_dropout(decoder: TextDecoder, p: float) -> None:
    """Set every dropout module of ``decoder`` (GPT-2's attention, residual and embedding dropout) to
    ``p`` for training; eval mode turns them off anyway."""
    for module in decoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def load_decoder_state(
    state_path: Path | None, key: str, decoder: TextDecoder, optimiser: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Load a saved training state into ``decoder`` and ``optimiser`` when ``state_path`` exists and
    return it (the caller reads ``step``, ``losses`` and its own fields); ``None`` when there is none.
    A state saved under another content ``key`` belongs to another run: a ``RuntimeError``."""
    if state_path is None or not state_path.exists():
        return None
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    if state.get("key") != key:
        raise RuntimeError(
            f"training state {state_path} belongs to another run (key {str(state.get('key'))[:16]}, "
            f"this run {key[:16]}); delete it or use another resume_dir"
        )
    decoder.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    return state


def train_decoder_steps(
    decoder: TextDecoder,
    optimiser: torch.optim.Optimizer,
    config: DecoderRecipe,
    seed: int,
    batch: Callable[[int], tuple[list[list[int]], list[list[int]], torch.Tensor | None]],
    *,
    start: int,
    end: int,
    losses: list[float],
    state_path: Path | None,
    key: str,
    extra_state: dict[str, Any] | None = None,
    desc: str = "train decoder",
    progress: bool = True,
) -> None:
    """Steps ``start .. end - 1`` of teacher-forced training (the captioner's and the planner's loop).

    Each step sets the learning rate (linear warm-up, cosine decay), takes ``batch(step)`` (prompts,
    answers and the optional prefix vectors), reseeds torch from ``(seed, step)``, minimises
    :meth:`TextDecoder.loss` with gradient clipping and appends the loss to ``losses``. Every
    ``config.checkpoint_every`` steps and at ``end`` the full state (weights, optimiser, step, losses,
    ``extra_state``) is written atomically to ``state_path`` (if given) under ``key``."""
    from cirlib.models.clip import save_training_state
    from cirlib.models.phi import _cosine_lr

    def save_state(step: int) -> None:
        if state_path is not None:
            save_training_state(
                state_path,
                {
                    "key": key,
                    "step": step,
                    "model": decoder.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "losses": losses,
                    **(extra_state or {}),
                },
            )

    if start >= end:
        return
    decoder.train()
    bar = progress_bar(range(start, end), desc=desc, show=progress, initial=start, total=config.steps)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = _cosine_lr(step, config.steps, config.warmup_steps, config.lr)
        prompts, answers, prefix = batch(step)
        torch.manual_seed(seed * SEED_STRIDE + step)  # dropout masks: a function of (seed, step)
        loss = decoder.loss(prompts, answers, prefix=prefix)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip_norm)
        optimiser.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == end:
            save_state(done)
