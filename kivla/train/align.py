"""Vision alignment of a real pretrained LM (LLaVA's first stage), and the architecture of a run on it.

`kivla pretrain --backbone smollm2` trains only the image pathway (EfficientNet-Lite0 or the conv
stem, and the new projector) on the world's captions and VQA while SmolLM2 stays frozen: the
image tokens learn to speak to the language model without the language model moving. The checkpoint
is the common start of every recipe (`kivla train --init`), so the recipes differ only in what
robot training does to the LM.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from kivla.model.batch import BatchBuilder
from kivla.model.bundle import PolicyBundle
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


def align_vision(config, progress: bool = True, resume: bool = False, ctx=None) -> Path:
    """Train the image pathway of `config.backbone` against the frozen LM on the world's captions /
    VQA (`config`: a `PretrainConfig`); returns the final checkpoint (a policy bundle)."""
    from kivla.data.mixture import MixtureSampler
    from kivla.data.world_env import ACTION_DIM, STATE_DIM
    from kivla.train import run
    from kivla.train.fitting import MAX_PROMPT_LEN, MAX_SUFFIX_LEN
    from kivla.train.mixture import MixtureBatches

    out = Path(config.out)
    text, layout = real_vocabulary(config.backbone)
    arch = real_arch(config.backbone, config.vision, config.image_size, 50, ACTION_DIM, STATE_DIM)
    # The dense vision losses read the tiny VLM's image hidden states, which an HF decoder does not give.
    overrides = {k: v for k, v in config.policy_overrides.items() if k not in VISION_LOSS_FIELDS}
    policy_cfg = dataclasses.replace(arch, flow_weight=0.0, fast_weight=0.0, discrete_target="none",
                                     **overrides)  # fmt: skip
    torch.manual_seed(config.seed)
    policy = KIPolicy(policy_cfg)
    freeze_language_model(policy)
    builder = BatchBuilder(text, None, image_size=config.image_size, horizon=50, action_dim=ACTION_DIM,
                           state_dim=STATE_DIM, max_prompt_len=MAX_PROMPT_LEN,
                           max_suffix_len=MAX_SUFFIX_LEN, layout=layout)  # fmt: skip
    bundle = PolicyBundle(policy, builder, None, recipe="align")
    sampler = MixtureSampler(None, config.mixture.weights(), config.seed, image_size=config.image_size,
                             exclude_question_types=config.mixture.exclude_question_types)  # fmt: skip
    record = {"pretrain": {**dataclasses.asdict(config), "out": str(out), "stage": "vision alignment"}}
    batches = MixtureBatches(builder, sampler, config.seed)
    train = config.train_config()
    outcome = run._run_trainer(bundle, batches, train, out, record, progress, resume, ctx)
    return outcome.checkpoints[-1]
