"""Policy assembly, in one place for training, pretraining, tests and benchmarks.

Read top to bottom: a size's architecture at the data's shapes, a recipe on top (`policy_config`);
then the policy itself from a fixed seed, the world's label words, the backbone weights of a
pretrained bundle, and the bundle that carries it with its batch builder (`assemble_bundle`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from kivla.data.normalize import QuantileNormalizer
from kivla.model.batch import BatchBuilder
from kivla.model.bundle import PolicyBundle
from kivla.model.config import BackboneConfig, KIPolicyConfig
from kivla.model.policy import KIPolicy
from kivla.model.presets import RECIPES, SIZES

AUX_HEADS = ("vision_head", "refer_head", "where_head")  # training heads on the backbone's image tokens


def policy_config(
    size: str,
    recipe: str,
    *,
    image_size: int,
    vocab_size: int,
    horizon: int,
    action_dim: int,
    state_dim: int,
    backbone: BackboneConfig | None = None,
    backbone_overrides: dict[str, Any] | None = None,
    **overrides: Any,
) -> KIPolicyConfig:
    """Size `size` at these shapes under recipe `recipe`, then `overrides` (KIPolicyConfig fields).

    `backbone` (a pretrained backbone's config) replaces the size's; `backbone_overrides` are
    BackboneConfig fields set on top of either.
    """
    arch = SIZES[size].policy_config(image_size, vocab_size, horizon, action_dim, state_dim)
    backbone = dataclasses.replace(backbone or arch.backbone, **(backbone_overrides or {}))
    return RECIPES[recipe].apply(dataclasses.replace(arch, backbone=backbone), **overrides)


def assemble_bundle(
    config: KIPolicyConfig,
    builder: BatchBuilder,
    normalizer: QuantileNormalizer | None = None,
    recipe: str | None = None,
    seed: int = 0,
    init: PolicyBundle | None = None,
) -> PolicyBundle:
    """A fresh policy of `config` (weights from `seed`), the backbone weights of `init` if given,
    and its dense vision heads where both policies have them at the same shapes (robot co-training
    with the vision losses continues the heads of pretraining instead of starting them afresh)."""
    if config.backbone.kind == "tiny" and config.backbone.vocab_size != builder.vocab_size:
        raise ValueError(
            f"BackboneConfig.vocab_size: {config.backbone.vocab_size} != the batch builder's "
            f"vocabulary {builder.vocab_size}"
        )
    torch.manual_seed(seed)
    policy = KIPolicy(config)
    if config.vision_labels and (config.vision_readout == "words" or config.backbone.naming_labels):
        from kivla.data.language import NEAREST_WORDS  # the world's words: "nearest"
        from kivla.data.world_scene import label_words  # its label classes in words

        policy.set_label_words(label_words(), builder.text.token_id, NEAREST_WORDS)
    if init is not None:
        state = init.policy.state_dict()
        policy.backbone.load_state_dict(
            {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        )
        own = policy.state_dict()
        heads = {k: v for k, v in state.items() if k.split(".")[0] in AUX_HEADS}
        policy.load_state_dict({k: v for k, v in heads.items() if k in own and own[k].shape == v.shape},
                               strict=False)  # fmt: skip
    return PolicyBundle(policy, builder, normalizer, recipe)
