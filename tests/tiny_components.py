"""Tiny random diffusers / transformers components for offline tests (no download, CPU, seconds).

Shared by ``test_released_models.py`` (the local-folder loaders) and ``test_cig_paper.py`` (CIG's
pseudo-target generator). Every builder is seeded, so the same call gives the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch


def clip_tokenizer(symbols: Sequence[str] = ()) -> Any:
    """A CLIP BPE tokenizer over single letters (vocab written here; no download).

    ``symbols`` adds single-character words such as ``"$"`` (as ``"$</w>"``, the form the real CLIP
    vocabulary holds them in), so that a free-standing placeholder is one token as in CLIP."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    for s in symbols:
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def unet(seed: int, sdxl: bool) -> Any:
    """A two-level UNet2DConditionModel; SDXL's has the text-time additional embedding."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    extra = (
        {
            "cross_attention_dim": 32,  # the two text encoders' widths concatenated
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 4,
            "projection_class_embeddings_input_dim": 6 * 4 + 16,  # 6 time ids + pooled text (16)
            "use_linear_projection": True,
        }
        if sdxl
        else {"cross_attention_dim": 16}
    )
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=2,
        **extra,
    )


def vae(seed: int) -> Any:
    """A two-level AutoencoderKL (scale factor 2: 32x32 images have 16x16 latents)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )


def text_config(vocab_size: int) -> Any:
    """A two-layer CLIP text config of width 16 (projection 16)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        projection_dim=16,
    )


def save_sd15_pipeline(folder: Path, seed: int = 0, tokenizer: Any = None) -> Path:
    """A tiny random ``StableDiffusionPipeline`` (no safety checker) saved to ``folder``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    tok = tokenizer if tokenizer is not None else clip_tokenizer()
    torch.manual_seed(seed)
    StableDiffusionPipeline(
        vae=vae(seed),
        text_encoder=CLIPTextModel(text_config(len(tok))),
        tokenizer=tok,
        unet=unet(seed, sdxl=False),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def save_sdxl_pipeline(folder: Path, seed: int = 1, tokenizer: Any = None) -> Path:
    """A tiny random ``StableDiffusionXLPipeline`` (two text encoders, no watermark) saved to ``folder``."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok = tokenizer if tokenizer is not None else clip_tokenizer()
    torch.manual_seed(seed)
    StableDiffusionXLPipeline(
        vae=vae(seed),
        text_encoder=CLIPTextModel(text_config(len(tok))),
        text_encoder_2=CLIPTextModelWithProjection(text_config(len(tok))),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet(seed, sdxl=True),
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1),
        add_watermarker=False,
    ).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- CLIPs
#: Micro widths of the real kind (open_clip.CLIP, real tokenizer and vocabulary): tests take seconds.
MICRO_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

#: A random paper-profile backbone: 16-d features, 77-token context like the real CLIPs.
TINY_PAPER_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def register_random_backbone(root: Path, arch: str) -> Path:
    """Register ``arch`` as a paper-profile backbone (open_clip config + ``PAPER_BACKBONES`` entry) and
    write random weights for it into ``root / "weights"`` under the expected file name; returns that
    folder. Undo with ``PAPER_BACKBONES.pop(arch)``."""
    import json

    import open_clip
    import safetensors.torch

    from cirlib.models import weights as weights_mod

    (root / f"{arch}.json").write_text(json.dumps(TINY_PAPER_CLIP))
    open_clip.add_model_config(root / f"{arch}.json")
    backbone = weights_mod.PaperBackbone(arch, "random", "none/none", quick_gelu=True)
    weights_mod.PAPER_BACKBONES[arch] = backbone
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_PAPER_CLIP, quick_gelu=True)
    folder = root / "weights"
    folder.mkdir()
    safetensors.torch.save_file(model.state_dict(), folder / weights_mod.expected_filename(backbone))
    return folder


def random_backbone(tmp_path_factory: Any, arch: str) -> Iterator[Path]:
    """The body of a module fixture: ``yield from random_backbone(tmp_path_factory, ARCH)`` gives the
    weights folder of a registered random backbone and unregisters it afterwards."""
    from cirlib.models import weights as weights_mod

    folder = register_random_backbone(tmp_path_factory.mktemp("backbone"), arch)
    yield folder
    weights_mod.PAPER_BACKBONES.pop(arch, None)


# --------------------------------------------------------------------------- captioner, LLM, GLIGEN
def byte_tokenizer(**specials: str) -> Any:
    """A byte-level GPT-2 tokenizer: the 256 byte symbols plus the given special tokens, no merges."""
    from tokenizers import pre_tokenizers
    from transformers import GPT2Tokenizer

    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials.values()))}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    return GPT2Tokenizer(vocab=vocab, merges=[], model_max_length=128, **specials)


def save_blip2(folder: Path, seed: int = 0) -> Path:
    """A tiny random BLIP-2 (ViT, Q-Former, OPT) with a byte-level tokenizer, saved to ``folder``."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tok = byte_tokenizer(bos_token="</s>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    processor = Blip2Processor(BlipImageProcessor(size={"height": 16, "width": 16}), tok, num_query_tokens=4)
    vocab_size = len(processor.tokenizer)  # the processor adds the <image> token
    config = Blip2Config(
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        qformer_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "encoder_hidden_size": 16,
            "vocab_size": vocab_size,
        },
        text_config={
            "model_type": "opt",
            "vocab_size": vocab_size,
            "hidden_size": 16,
            "ffn_dim": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "word_embed_proj_dim": 16,
            "max_position_embeddings": 64,
            "bos_token_id": tok.convert_tokens_to_ids("</s>"),
            "eos_token_id": tok.convert_tokens_to_ids("<eos>"),
            "pad_token_id": tok.convert_tokens_to_ids("<pad>"),
        },
        num_query_tokens=4,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_llm(folder: Path, seed: int = 0, max_position_embeddings: int = 128) -> Path:
    """A tiny random Llama with a byte-level tokenizer and a chat template, saved to ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tok.model_max_length = max(tok.model_max_length, max_position_embeddings)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def gligen_unet(seed: int, gate: float = 1.0) -> Any:
    """A two-level text-box GLIGEN UNet: ``attention_type="gated"`` gives every transformer block a
    gated self-attention layer (the "fuser") and the UNet a ``GLIGENTextBoundingboxProjection``
    (``position_net``) over phrase features of width ``cross_attention_dim``. Fresh gates are
    ``tanh(0) = 0`` (GLIGEN starts training from a no-op); ``gate`` sets them, so that the layout
    reaches the image."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention import GatedSelfAttentionDense

    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=2,
        cross_attention_dim=16,
        attention_type="gated",
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.alpha_attn.fill_(gate)
                module.alpha_dense.fill_(gate)
    return model


def save_gligen_pipeline(folder: Path, seed: int = 2, tokenizer: Any = None) -> Path:
    """A tiny random text-box ``StableDiffusionGLIGENPipeline`` (no safety checker) saved to ``folder``."""
    from diffusers import DDIMScheduler, StableDiffusionGLIGENPipeline
    from transformers import CLIPTextModel

    tok = tokenizer if tokenizer is not None else clip_tokenizer()
    torch.manual_seed(seed)
    StableDiffusionGLIGENPipeline(
        vae=vae(seed),
        text_encoder=CLIPTextModel(text_config(len(tok))),
        tokenizer=tok,
        unet=gligen_unet(seed),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder
