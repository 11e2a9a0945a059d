"""`--backbone smollm2`: the real SmolLM2-135M-Instruct language model with image tokens from
EfficientNet-Lite0 (ImageNet weights) or from kivla's own conv stem, both from installed packages.

Image tokens: EfficientNet-Lite0's last feature map [B, 1280, S/32, S/32] (16 tokens at the default
128 px), or the conv stem's [B, W, 8, 8] grid, each through a new linear projector (LLaVA) to the
LM width, then an RMSNorm whose gain starts at the RMS of the LM's own token embeddings, so image
tokens enter the residual stream at the scale the pretrained layers expect of a token
(docs/learning.md: image tokens far larger than text ones drown them).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import Tensor, nn

from kivla.model.config import BackboneConfig, ExpertConfig, KIPolicyConfig
from kivla.model.layers import RMSNorm

VISIONS = ("efficientnet", "conv")
SMOLLM2_VOCAB = 49152


class ImageTokens(nn.Module):
    """pixels [B, 3, S, S] in [0, 1] -> image tokens [B, N, lm_width]."""

    def __init__(self, encoder: nn.Module, channels: int, lm_width: int, token_rms: float,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:  # fmt: skip
        super().__init__()
        self.encoder = encoder  # [B, 3, S, S] -> [B, channels, h, w]
        self.projector = nn.Linear(channels, lm_width)
        self.norm = RMSNorm(lm_width)
        nn.init.constant_(self.norm.weight, token_rms)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: Tensor) -> Tensor:
        grid = self.encoder((pixels - self.mean) / self.std)  # [B, C, h, w]
        return self.norm(self.projector(grid.flatten(2).transpose(1, 2)))  # [B, h·w, W]


class ConvEncoder(nn.Module):
    """kivla's conv stem (stride-2 3x3 convs) plus a learned position per grid cell."""

    def __init__(self, config: BackboneConfig, width: int) -> None:
        super().__init__()
        from kivla.model.backbone import image_stem

        self.stem = image_stem(dataclasses.replace(config, width=width, stem="conv"))
        side = config.image_size // config.patch_size
        self.position = nn.Parameter(torch.randn(1, width, side, side) * 0.02)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.stem(pixels) + self.position


def load_smollm2_backbone(config: BackboneConfig):
    """An `HFBackbone` over SmolLM2 (from `config.path`, default: the cached conversion of the
    installed GGUF) and the image tokens of `config.vision`; no network, no remote code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from kivla.model.hf import HFBackbone
    from kivla.model.pretrained import efficientnet_lite0_weights, smollm2_dir

    if config.vision not in VISIONS:
        raise ValueError(f"BackboneConfig.vision: expected one of {VISIONS}, got {config.vision!r}")
    path = config.path or smollm2_dir()
    if not os.path.isdir(path):
        raise FileNotFoundError(f"BackboneConfig.path: no local model directory at {path}")
    lm = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, trust_remote_code=False, dtype=torch.float32
    )
    width = lm.config.hidden_size
    token_rms = float(lm.get_input_embeddings().weight.detach().pow(2).mean().sqrt())
    if config.vision == "efficientnet":
        from kivla.model.efficientnet import FEATURES, load_efficientnet_lite0

        encoder, channels, size = (
            load_efficientnet_lite0(efficientnet_lite0_weights()),
            FEATURES,
            config.vision_size,
        )
        mean, std = (127 / 255,) * 3, (128 / 255,) * 3  # TF-Lite's (x - 127) / 128
    else:
        encoder, channels, size = ConvEncoder(config, width), width, config.image_size
        mean, std = config.image_mean, config.image_std
    vision = ImageTokens(encoder, channels, width, token_rms, mean, std)
    # HFBackbone resizes to `size`; the normalization is the vision module's own.
    return HFBackbone(
        lm.get_decoder(), lm.get_output_embeddings(), vision, size, image_mean=0.0, image_std=1.0
    )


def smollm2_text_tokenizer(path: str | os.PathLike | None = None):
    """SmolLM2's own BPE tokenizer (`tokenizer.json` of the converted folder) for `BatchBuilder`."""
    from pathlib import Path

    from kivla.model.pretrained import smollm2_dir
    from kivla.model.text_pretrained import PretrainedTextTokenizer

    return PretrainedTextTokenizer.load(Path(path or smollm2_dir()) / "tokenizer.json")


def smollm2_layout(vocab_size: int = SMOLLM2_VOCAB, action_vocab_size: int = 1024):
    """State bins and action ids on the last ids of the pretrained vocabulary (PaliGemma's way)."""
    from kivla.model.vocab import STATE_BINS, VocabLayout

    text = vocab_size - STATE_BINS - action_vocab_size
    return VocabLayout(text, STATE_BINS, action_vocab_size, total=vocab_size)


def smollm2_policy_config(image_size: int, horizon: int, action_dim: int, state_dim: int,
                          vision: str = "efficientnet", **backbone: Any) -> KIPolicyConfig:  # fmt: skip
    """SmolLM2 + image tokens and an expert whose head count follows the LM's kv heads."""
    config = BackboneConfig(kind="smollm2", vocab_size=SMOLLM2_VOCAB, image_size=image_size,
                            patch_size=max(1, image_size // 8), vision=vision, **backbone)  # fmt: skip
    expert = ExpertConfig(num_heads=None, horizon=horizon, action_dim=action_dim, state_dim=state_dim)
    return KIPolicyConfig(backbone=config, expert=expert)
