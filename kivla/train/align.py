"""Vision alignment of a real pretrained LM (LLaVA's first stage), and the architecture of a run on it.

`kivla pretrain --backbone smollm2` (`kivla.train.run.pretrain_backbone` with `alignment_config`)
trains only the image pathway (EfficientNet-Lite0 or the conv stem, and the new projector) on the
world's captions and VQA while SmolLM2 stays frozen: the image tokens learn to speak to the language
model without the language model moving. The checkpoint is the common start of every recipe
(`kivla train --init`), so the recipes differ only in what robot training does to the LM.
"""

from __future__ import annotations

import dataclasses

from kivla.model.config import KIPolicyConfig
from kivla.model.policy import KIPolicy

BACKBONES = ("tiny", "smollm2")  # "tiny": the built-in VLM; "smollm2": the real SmolLM2-135M
VISIONS = ("efficientnet", "conv")  # smollm2's image tokens: EfficientNet-Lite0 or kivla's conv stem
VISION_LOSS_FIELDS = ("vision_weight", "vision_labels", "vision_readout", "refer_weight", "refer_layer")


def real_arch(backbone: str, vision: str, image_size: int, horizon: int, action_dim: int,
              state_dim: int) -> KIPolicyConfig:  # fmt: skip
    """The architecture of a real-backbone run (the recipe goes on top); the conv stem reads the
    world's images centred on the table colour, as the tiny VLM does."""
    from kivla.model.presets import SIZES
    from kivla.model.smollm2 import smollm2_policy_config

    if backbone != "smollm2":
        raise ValueError(f"backbone: expected one of {BACKBONES[1:]} for a real backbone, got {backbone!r}")
    tiny = SIZES["tiny"]
    image = {"image_mean": tiny.image_mean, "image_std": tiny.image_std}
    return smollm2_policy_config(image_size, horizon, action_dim, state_dim, vision=vision, **image)


def real_vocabulary(backbone: str):
    """(text tokenizer, vocabulary layout) of a real backbone: its own BPE, actions on its last ids."""
    from kivla.model.smollm2 import smollm2_layout, smollm2_text_tokenizer

    if backbone != "smollm2":
        raise ValueError(f"backbone: expected one of {BACKBONES[1:]} for a real backbone, got {backbone!r}")
    return smollm2_text_tokenizer(), smollm2_layout()


def freeze_language_model(policy: KIPolicy) -> None:
    """Everything of the backbone but its image pathway stops learning (the LM head is tied)."""
    policy.backbone.requires_grad_(False)
    policy.backbone.vision.requires_grad_(True)


def alignment_config(config) -> KIPolicyConfig:
    """The policy of the vision-alignment stage of `config` (a `PretrainConfig` with a real
    `backbone`): the real architecture, no action losses, the config's other overrides."""
    from kivla.data.world_env import ACTION_DIM, STATE_DIM

    arch = real_arch(config.backbone, config.vision, config.image_size, 50, ACTION_DIM, STATE_DIM)
    # The dense vision losses read the tiny VLM's image hidden states, which an HF decoder does not give.
    overrides = {k: v for k, v in config.policy_overrides.items() if k not in VISION_LOSS_FIELDS}
    return dataclasses.replace(arch, flow_weight=0.0, fast_weight=0.0, discrete_target="none", **overrides)
