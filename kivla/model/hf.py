"""Backbones over HF transformers: PaliGemma, Idefics3 (SmolVLM), and a Llama-family causal LM
(SmolLM2, Gemma, ...) with a small vision encoder.

The decoder runs once over [image features, prompt | suffix] with kivla's own 4D mask and position
ids; its KV cache gives each layer's post-RoPE prefix keys/values for the expert. Weights load from
a local directory only (`local_files_only=True`, never `trust_remote_code`).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kivla.model.backbone import Backbone, BackboneOutput, PrefixCache
from kivla.model.masks import backbone_attention_mask, following_positions, prefix_positions


class HFBackbone(Backbone):
    """A HF decoder (`LlamaModel`, `GemmaModel`, ...) fed by a vision module of the same width."""

    def __init__(
        self,
        text_model: nn.Module,
        lm_head: nn.Module,
        vision: nn.Module,
        vision_image_size: int,
        image_mean: float = 0.5,
        image_std: float = 0.5,
    ) -> None:
        super().__init__()
        from transformers import DynamicCache

        self._cache_class = DynamicCache
        self.text_model, self.lm_head, self.vision = text_model, lm_head, vision
        self.vision_image_size, self.image_mean, self.image_std = vision_image_size, image_mean, image_std
        cfg = text_model.config
        rope = getattr(cfg, "rope_parameters", None) or {"rope_type": "default", "rope_theta": cfg.rope_theta}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(
                f"text config rope_type: only 'default' RoPE is supported, got {rope['rope_type']!r}"
            )
        self.num_layers = cfg.num_hidden_layers
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.vocab_size = cfg.vocab_size
        self.rope_theta = float(rope["rope_theta"])

    def _image_features(self, images: Tensor) -> Tensor:
        pixels = F.interpolate(images, size=self.vision_image_size, mode="bilinear", align_corners=False)
        return self.vision((pixels - self.image_mean) / self.image_std)  # [B, n_img, W]

    def forward(self, images, image_mask, prefix_ids, prefix_mask, suffix_ids=None, suffix_mask=None):
        embed = self.text_model.get_input_embeddings()
        features = self._image_features(images)
        x = torch.cat([features.to(embed.weight.dtype), embed(prefix_ids)], dim=1)
        prefix_valid = torch.cat([image_mask[:, None].expand(-1, features.shape[1]), prefix_mask], dim=1)
        num_prefix = x.shape[1]
        positions = prefix_positions(prefix_valid)
        if suffix_ids is not None and suffix_ids.shape[1] > 0:
            x = torch.cat([x, embed(suffix_ids)], dim=1)
            positions = torch.cat([positions, following_positions(prefix_valid, suffix_mask)], dim=1)
        else:
            suffix_mask = prefix_valid[:, :0]
        allowed = backbone_attention_mask(prefix_valid, suffix_mask)[:, None]  # [B, 1, N, N]
        additive = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        additive.masked_fill_(~allowed, torch.finfo(x.dtype).min)  # works with eager and sdpa attention
        try:
            cache = self._cache_class(config=self.text_model.config)
        except TypeError:  # older transformers: no config argument
            cache = self._cache_class()
        # transformers 5 names the argument `cache`; 4.x `past_key_values`. The cache object is
        # filled in place either way.
        cache_kwarg = (
            "cache" if "cache" in inspect.signature(self.text_model.forward).parameters else "past_key_values"
        )
        out = self.text_model(
            inputs_embeds=x,
            attention_mask=additive,
            position_ids=positions,
            use_cache=True,
            **{cache_kwarg: cache},
        )
        keys, values = _cache_tensors(cache)
        keys = [k[:, :, :num_prefix] for k in keys]
        values = [v[:, :, :num_prefix] for v in values]
        hidden = out.last_hidden_state  # already final-normed
        suffix_hidden = hidden[:, num_prefix:] if hidden.shape[1] > num_prefix else None
        return BackboneOutput(PrefixCache(keys, values, prefix_valid), suffix_hidden)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        embeddings = {
            id(p): p for p in [self.text_model.get_input_embeddings().weight, *self.lm_head.parameters()]
        }
        body = [p for p in self.parameters() if id(p) not in embeddings]
        return {"backbone": body, "embeddings": list(embeddings.values())}


def _cache_tensors(cache) -> tuple[list[Tensor], list[Tensor]]:
    """Per-layer keys and values [B, kv, N, hd] of a filled DynamicCache (transformers 4.x or 5)."""
    if hasattr(cache, "layers"):
        return [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]
    return list(cache.key_cache), list(cache.value_cache)


class _PaliGemmaVision(nn.Module):
    def __init__(self, model: nn.Module) -> None:  # PaliGemmaModel
        super().__init__()
        self.vision_tower, self.multi_modal_projector = model.vision_tower, model.multi_modal_projector

    def forward(self, pixels: Tensor) -> Tensor:
        return self.multi_modal_projector(self.vision_tower(pixel_values=pixels).last_hidden_state)


class _Idefics3Vision(nn.Module):
    def __init__(self, model: nn.Module) -> None:  # Idefics3Model
        super().__init__()
        self.vision_model, self.connector = model.vision_model, model.connector
        self.patch_size = model.config.vision_config.patch_size

    def forward(self, pixels: Tensor) -> Tensor:
        # Called on the vision model directly: Idefics3Model drops all-zero images, which would
        # misalign the batch for examples without an image.
        side = pixels.shape[-1] // self.patch_size
        patches = torch.ones(pixels.shape[0], side, side, dtype=torch.bool, device=pixels.device)
        hidden = self.vision_model(pixel_values=pixels, patch_attention_mask=patches).last_hidden_state
        return self.connector(hidden)


class _ProjectedVision(nn.Module):
    """A vision encoder (e.g. SigLIP) + a linear projector to the LM width (LLaVA style)."""

    def __init__(self, encoder: nn.Module, lm_width: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Linear(encoder.config.hidden_size, lm_width)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.projector(self.encoder(pixel_values=pixels).last_hidden_state)


def paligemma_backbone(model: nn.Module) -> HFBackbone:
    """From a `PaliGemmaForConditionalGeneration`."""
    return HFBackbone(
        model.model.language_model, model.lm_head, _PaliGemmaVision(model.model),
        model.config.vision_config.image_size,
    )  # fmt: skip


def idefics3_backbone(model: nn.Module) -> HFBackbone:
    """From an `Idefics3ForConditionalGeneration` (SmolVLM)."""
    return HFBackbone(
        model.model.text_model, model.lm_head, _Idefics3Vision(model.model),
        model.config.vision_config.image_size,
    )  # fmt: skip


def causal_lm_backbone(lm: nn.Module, vision_encoder: nn.Module) -> HFBackbone:
    """From an `AutoModelForCausalLM` (Llama family: SmolLM2, Gemma, ...) and a vision encoder such
    as `SiglipVisionModel`; a new linear projector maps the vision width to the LM width."""
    vision = _ProjectedVision(vision_encoder, lm.config.hidden_size)
    return HFBackbone(lm.get_decoder(), lm.get_output_embeddings(), vision, vision_encoder.config.image_size)


def load_hf_backbone(
    kind: str, path: str | os.PathLike, vision_path: str | os.PathLike | None = None
) -> HFBackbone:
    """Load `kind` ("paligemma", "idefics3", "causal_lm") from a local directory; no downloads."""
    import transformers

    def local(p: str | os.PathLike | None, field: str) -> str:
        if p is None or not Path(p).is_dir():
            raise FileNotFoundError(f"{field}: no local model directory at {p}")
        return str(p)

    options = dict(local_files_only=True, trust_remote_code=False)
    if kind == "paligemma":
        model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(local(path, "path"), **options)
        return paligemma_backbone(model)
    if kind == "idefics3":
        model = transformers.Idefics3ForConditionalGeneration.from_pretrained(local(path, "path"), **options)
        return idefics3_backbone(model)
    if kind == "causal_lm":
        lm = transformers.AutoModelForCausalLM.from_pretrained(local(path, "path"), **options)
        encoder = transformers.AutoModel.from_pretrained(local(vision_path, "vision_path"), **options)
        encoder = getattr(encoder, "vision_model", encoder)  # a full SigLIP/CLIP model: its vision half
        return causal_lm_backbone(lm, encoder)
    raise ValueError(f"kind: expected 'paligemma', 'idefics3' or 'causal_lm', got {kind!r}")
