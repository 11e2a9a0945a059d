"""HF adapters on tiny random configs built here (no downloads): forward, backward, routing, cache."""

import dataclasses

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kivla.model.backbones import build_backbone  # noqa: E402
from kivla.model.config import BackboneConfig  # noqa: E402
from kivla.model.hf import causal_lm_backbone, idefics3_backbone, load_hf_backbone, paligemma_backbone  # noqa: E402
from kivla.model.policy import KIPolicy  # noqa: E402
from kivla.model.presets import recipe_config, tiny_test_config  # noqa: E402
from kivla.model.synthetic import synthetic_batch  # noqa: E402

VOCAB = 320
TEXT = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    intermediate_size=64, head_dim=16, pad_token_id=0,
)  # fmt: skip
VISION = dict(hidden_size=32, image_size=16, patch_size=8, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=64)  # fmt: skip


def tiny_paligemma():
    config = transformers.PaliGemmaConfig(
        vision_config={**VISION, "model_type": "siglip_vision_model", "projection_dim": 32},
        text_config={**TEXT, "model_type": "gemma"},
        image_token_index=VOCAB - 1,
        projection_dim=32,
    )
    return transformers.PaliGemmaForConditionalGeneration(config)


def tiny_idefics3():
    config = transformers.Idefics3Config(
        vision_config={**VISION, "model_type": "idefics3_vision"},
        text_config={**TEXT, "model_type": "llama"},
        scale_factor=2,
        image_token_id=VOCAB - 1,
    )
    return transformers.Idefics3ForConditionalGeneration(config)


def tiny_llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**TEXT))


def tiny_siglip():
    return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION))


BUILDERS = {
    "paligemma": lambda: paligemma_backbone(tiny_paligemma()),
    "idefics3": lambda: idefics3_backbone(tiny_idefics3()),
    "causal_lm": lambda: causal_lm_backbone(tiny_llama(), tiny_siglip()),
}


def policy_for(kind: str, recipe: str) -> KIPolicy:
    torch.manual_seed(0)
    base = tiny_test_config()
    base = dataclasses.replace(base, backbone=dataclasses.replace(base.backbone, vocab_size=VOCAB))
    return KIPolicy(recipe_config(recipe, base), backbone=BUILDERS[kind]())


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_forward_backward_and_insulation(kind):
    policy = policy_for(kind, "ki")
    batch = synthetic_batch(policy.config, 4, prompt_len=6, fast_len=5, num_language=1, action_vocab_size=32)
    out = policy(batch)
    assert all(torch.isfinite(v) and v > 0 for v in out.parts.values())
    out.parts["flow"].backward(retain_graph=True)
    backbone_grads = [p.grad for p in policy.backbone.parameters() if p.grad is not None]
    assert all(torch.count_nonzero(g) == 0 for g in backbone_grads)
    policy.zero_grad(set_to_none=True)
    out.total.backward()
    groups = policy.backbone.parameter_groups()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["backbone"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["embeddings"])


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_naive_flow_reaches_the_hf_backbone_and_sampling_cache_is_exact(kind):
    policy = policy_for(kind, "naive")
    batch = synthetic_batch(policy.config, 3, prompt_len=6, fast_len=5, action_vocab_size=32)
    policy(batch).parts["flow"].backward()
    layers = [p for n, p in policy.backbone.named_parameters() if "layers.0." in n and "text_model" in n]
    assert layers and any(p.grad is not None and p.grad.abs().sum() > 0 for p in layers)
    policy.eval()
    noise = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(0))
    cached = policy.sample_actions(batch, noise=noise)
    uncached = policy.sample_actions(batch, noise=noise, use_cache=False)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)


def test_fast_tokens_do_not_change_the_expert_output_with_an_hf_backbone():
    policy = policy_for("causal_lm", "ki").eval()
    batch = synthetic_batch(policy.config, 2, prompt_len=6, fast_len=5, action_vocab_size=32)
    altered = dataclasses.replace(batch, suffix_ids=batch.suffix_ids.flip(1))
    x_t, t = torch.randn(2, 4, 3), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        assert torch.equal(policy.velocity(batch, x_t, t), policy.velocity(altered, x_t, t))


def test_load_from_a_local_directory(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "lm")
    tiny_siglip().save_pretrained(tmp_path / "vision")
    backbone = load_hf_backbone("causal_lm", tmp_path / "lm", tmp_path / "vision")
    assert backbone.num_layers == 2 and backbone.num_kv_heads == 1 and backbone.head_dim == 16
    config = BackboneConfig(kind="causal_lm", path=str(tmp_path / "lm"), vision_path=str(tmp_path / "vision"))
    assert build_backbone(config).vocab_size == VOCAB
    with pytest.raises(FileNotFoundError, match="vision_path"):
        load_hf_backbone("causal_lm", tmp_path / "lm", tmp_path / "missing")
    with pytest.raises(ValueError, match=r"BackboneConfig\.path"):
        BackboneConfig(kind="paligemma")
