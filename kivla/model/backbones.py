"""The backbone factory: `BackboneConfig.kind` -> an implementation of the `Backbone` interface.

Apart from the interface (`kivla.model.backbone`) so that the implementations (the built-in tiny
VLM there, the HF adapters in `kivla.model.hf`) import the interface and nothing imports back.
"""

from __future__ import annotations

from kivla.model.backbone import Backbone, TinyVLM
from kivla.model.config import BackboneConfig


def build_backbone(config: BackboneConfig) -> Backbone:
    """The backbone named by `config.kind`."""
    if config.kind == "tiny":
        return TinyVLM(config)
    if config.kind in ("paligemma", "idefics3", "causal_lm"):
        from kivla.model.hf import load_hf_backbone  # transformers is an optional dependency

        return load_hf_backbone(config.kind, config.path, config.vision_path)
    if config.kind == "smollm2":
        from kivla.model.smollm2 import load_smollm2_backbone  # needs the `real` extra

        return load_smollm2_backbone(config)
    raise ValueError(f"BackboneConfig.kind: unknown backbone {config.kind!r}")
