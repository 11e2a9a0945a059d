"""The real SmolLM2-135M and EfficientNet-Lite0 from the installed packages (`make install-real`):
one ki step routes no flow gradient into the pretrained backbone; cached sampling == uncached.

The GGUF -> fp32 conversion is cached under $KIVLA_CACHE (~/.cache/kivla), so only the first run
pays for it (~20 s). In CI (CI=true) missing packages fail the test instead of skipping it.
"""

import os

import numpy as np
import pytest
import torch

from kivla.data.example import Example
from kivla.data.language import language_examples
from kivla.model.batch import BatchBuilder
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config
from kivla.model.pretrained import real_weights_available
from kivla.model.smollm2 import smollm2_layout, smollm2_policy_config, smollm2_text_tokenizer
from kivla.model.text import ANS, BOS, EOS

if not real_weights_available():
    if os.environ.get("CI"):
        raise RuntimeError("real weights not installed: run `make install-real` (CI must run this test)")
    pytest.skip("real weights not installed (make install-real)", allow_module_level=True)

H, D, S_DIM, IMAGE = 4, 3, 2, 32


def test_real_smollm2_ki_step_and_cached_sampling():
    from kivla.tokenizers import fit_tokenizer

    torch.manual_seed(0)
    base = smollm2_policy_config(IMAGE, H, D, S_DIM, vision_size=64)
    config = recipe_config("ki", base)
    policy = KIPolicy(config)
    backbone = policy.backbone
    assert (backbone.num_layers, backbone.num_kv_heads, backbone.head_dim) == (30, 3, 64)
    assert policy.expert.config.num_heads == 3  # derived from the LM's kv heads
    assert backbone.vocab_size == 49152

    text = smollm2_text_tokenizer()
    assert text.decode(text.encode("The capital of France is")) == "The capital of France is"
    assert {text.token_id(t) for t in (BOS, EOS, ANS)} == {1, 2, 14}
    rng = np.random.default_rng(0)
    chunks = rng.uniform(-1, 1, (64, H, D)).astype(np.float32)
    builder = BatchBuilder(text, fit_tokenizer("binning", chunks, num_bins=16), image_size=IMAGE, horizon=H,
                           action_dim=D, state_dim=S_DIM, layout=smollm2_layout())  # fmt: skip
    image = rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    robot = Example("put the red circle on the blue square", image, actions=chunks[0],
                    state=np.array([0.1, -0.3], np.float32), flow=True, fast=True)  # fmt: skip
    vqa = next(language_examples(0, 1, ("vqa",), image_size=IMAGE)).to_example()
    batch = builder.collate([robot, vqa])
    action_ids = batch.suffix_ids[0][batch.suffix_mask[0]][1:-1]  # between <act> and <eos>
    assert action_ids.min() >= builder.layout.action_offset  # the last ids of the vocabulary

    out = policy(batch)
    assert all(torch.isfinite(v) and v > 0 for v in out.parts.values())
    out.parts["flow"].backward(retain_graph=True)
    grads = [p.grad for p in backbone.parameters() if p.grad is not None]
    assert all(torch.count_nonzero(g) == 0 for g in grads)  # insulated: exactly zero
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.expert.parameters())
    policy.zero_grad(set_to_none=True)
    out.total.backward()  # FAST + answer losses do reach the LM
    layer0 = [p for n, p in backbone.named_parameters() if "layers.0." in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer0)

    policy.eval()
    obs = builder.observation([image], ["push the green triangle left"], [np.zeros(S_DIM, np.float32)])
    noise = torch.randn(1, H, D, generator=torch.Generator().manual_seed(0))
    cached = policy.sample_actions(obs, noise=noise, num_steps=3)
    uncached = policy.sample_actions(obs, noise=noise, num_steps=3, use_cache=False)
    torch.testing.assert_close(cached, uncached, atol=1e-4, rtol=0)
