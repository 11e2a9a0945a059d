"""The invariants of the KI policy: gradient routing, no leakage, cache equality, loss masks."""

import dataclasses

import numpy as np
import pytest
import torch

from kivla.model.conftest import robot_example, vqa_example
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config


def make_policy(config, recipe: str = "ki", seed: int = 0, **overrides) -> KIPolicy:
    torch.manual_seed(seed)
    return KIPolicy(recipe_config(recipe, config, **overrides))


def mixed_batch(builder, seed: int = 0):
    rng = np.random.default_rng(seed)
    return builder.collate([robot_example(rng), robot_example(rng, "push the blue square"), vqa_example(rng)])


def grads_of(policy: KIPolicy, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    policy.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n: p.grad for n, p in policy.named_parameters()}


@pytest.mark.parametrize("recipe", ["ki", "stopgrad"])
def test_insulated_flow_loss_gives_exactly_zero_backbone_gradient(builder, config, recipe):
    policy = make_policy(config, recipe)
    out = policy(mixed_batch(builder), generator=torch.Generator().manual_seed(0))
    grads = grads_of(policy, out.parts["flow"])
    backbone = {n: g for n, g in grads.items() if n.startswith("backbone.")}
    assert backbone and all(g is None or torch.count_nonzero(g) == 0 for g in backbone.values())
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("expert."))


@pytest.mark.parametrize("recipe", ["ki", "naive"])
def test_expert_only_batch_reports_and_trains_the_expert_losses(builder, config, recipe):
    """An expert step (`KIBatch.expert_only`): the flow loss alone, equal to the full step's; an
    insulated backbone runs without a graph (no gradient at all), an uninsulated one still learns."""
    policy = make_policy(config, recipe)
    batch = mixed_batch(builder)
    full = policy(batch, generator=torch.Generator().manual_seed(0))
    batch.expert_only = True
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    assert set(out.parts) == {"flow"} and torch.allclose(out.parts["flow"], full.parts["flow"])
    grads = grads_of(policy, out.total)
    backbone = [g for n, g in grads.items() if n.startswith("backbone.")]
    if recipe == "ki":
        assert all(g is None for g in backbone)
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in backbone)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("expert."))


def test_uninsulated_flow_loss_reaches_every_backbone_layer(builder, config):
    policy = make_policy(config, "naive")
    out = policy(mixed_batch(builder), generator=torch.Generator().manual_seed(0))
    grads = grads_of(policy, out.parts["flow"])
    for i in range(config.backbone.depth):
        layer = [g for n, g in grads.items() if n.startswith(f"backbone.layers.{i}.") and g is not None]
        assert sum(g.abs().sum() for g in layer) > 0, f"no flow gradient in backbone layer {i}"


def test_insulation_does_not_change_the_forward_pass(builder, config):
    batch = mixed_batch(builder)
    ki, joint = make_policy(config, "ki"), make_policy(config, "joint_fast")
    joint.load_state_dict(ki.state_dict())
    a = ki(batch, generator=torch.Generator().manual_seed(3))
    b = joint(batch, generator=torch.Generator().manual_seed(3))
    for name in ("flow", "fast", "lm"):
        assert torch.equal(a.parts[name], b.parts[name])


def test_fast_loss_trains_the_backbone_and_not_the_expert(builder, config):
    policy = make_policy(config, "ki")
    out = policy(mixed_batch(builder), generator=torch.Generator().manual_seed(0))
    assert out.parts["fast"] > 0
    grads = grads_of(policy, out.parts["fast"])
    assert all(g is None or torch.count_nonzero(g) == 0 for n, g in grads.items() if n.startswith("expert."))
    assert (
        sum(g.abs().sum() for n, g in grads.items() if n.startswith("backbone.layers") and g is not None) > 0
    )


def test_changing_fast_tokens_does_not_change_the_expert_output(builder, config):
    policy = make_policy(config, "joint_fast").eval()
    batch = mixed_batch(builder)
    altered = dataclasses.replace(batch, suffix_ids=batch.suffix_ids.clone())
    fast_positions = batch.suffix_loss["fast"]
    offset = builder.layout.action_offset
    altered.suffix_ids[fast_positions] = offset + (batch.suffix_ids[fast_positions] - offset + 5) % 16
    assert not torch.equal(altered.suffix_ids, batch.suffix_ids)
    g = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(3, 4, 3, generator=g), torch.rand(3, generator=g)
    with torch.no_grad():
        v = policy.velocity(batch, x_t, t)
        v_altered = policy.velocity(altered, x_t, t)
        # The FAST loss itself does see the change (the tokens are the targets).
        assert policy(batch).parts["fast"] != policy(altered).parts["fast"]
    assert torch.equal(v, v_altered)


def test_cached_sampling_equals_uncached(builder, config):
    policy = make_policy(config, "ki").eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    obs = builder.observation(images, ["put the red circle", "push"], [np.zeros(2), np.ones(2) * 0.5])
    noise = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    cached = policy.sample_actions(obs, num_steps=10, noise=noise)
    uncached = policy.sample_actions(obs, num_steps=10, noise=noise, use_cache=False)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)
    # The cache is the prefix of the training-time pass too (the suffix is invisible to the prefix).
    train_cache = policy._encode(mixed_batch(builder), with_suffix=True).cache
    prefix_cache = policy._encode(mixed_batch(builder), with_suffix=False).cache
    for k1, k2 in zip(train_cache.keys, prefix_cache.keys, strict=True):
        torch.testing.assert_close(k1, k2, atol=1e-5, rtol=0)


def test_sample_actions_unnormalizes(builder, config):
    policy = make_policy(config, "ki").eval()
    rng = np.random.default_rng(0)
    obs = builder.observation([rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)], ["push"], [np.zeros(2)])
    noise = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(0))
    normalized = policy.sample_actions(obs, noise=noise)
    policy.set_action_bounds(torch.tensor([0.0, -2.0, 10.0]), torch.tensor([1.0, 2.0, 30.0]))
    actions = policy.sample_actions(obs, noise=noise)
    expected = (normalized + 1) / 2 * torch.tensor([1.0, 4.0, 20.0]) + torch.tensor([0.0, -2.0, 10.0])
    torch.testing.assert_close(actions, expected)
    policy.set_action_bounds(torch.tensor([5.0, -2.0, 10.0]), torch.tensor([5.0, 2.0, 30.0]))
    torch.testing.assert_close(policy.sample_actions(obs, noise=noise)[..., 0], normalized[..., 0] + 5.0)
    with pytest.raises(ValueError, match="action bounds"):
        policy.set_action_bounds(torch.zeros(2), torch.ones(2))


def test_lm_only_example_gives_zero_flow_and_fast_gradients(builder, config):
    policy = make_policy(config, "joint_fast")
    rng = np.random.default_rng(0)
    batch = builder.collate([vqa_example(rng), vqa_example(rng)])
    out = policy(batch)
    assert out.parts["flow"] == 0 and out.parts["fast"] == 0 and out.parts["lm"] > 0
    assert torch.isfinite(out.total)
    loss = out.parts["flow"] + out.parts["fast"]
    if loss.requires_grad:  # constant zeros carry no graph at all; either way no gradient reaches a weight
        grads = grads_of(policy, loss)
        assert all(g is None or torch.count_nonzero(g) == 0 for g in grads.values())
    out.total.backward()  # a batch without flow / FAST work still trains (LM) and never NaNs
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)
    # In a mixed batch (no insulation) flow + FAST gradients reach the robot examples' inputs only.
    batch = mixed_batch(builder)
    images = batch.images.clone().requires_grad_(True)
    out = policy(dataclasses.replace(batch, images=images))
    (out.parts["flow"] + out.parts["fast"]).backward()
    assert torch.count_nonzero(images.grad[2]) == 0  # the VQA example
    assert torch.count_nonzero(images.grad[0]) > 0 and torch.count_nonzero(images.grad[1]) > 0
    # ... and the language example's (zero) action chunk does not enter the flow loss.
    perturbed = dataclasses.replace(batch, actions=batch.actions.clone())
    perturbed.actions[2] = 0.9
    a = policy(batch, generator=torch.Generator().manual_seed(1)).parts["flow"]
    b = policy(perturbed, generator=torch.Generator().manual_seed(1)).parts["flow"]
    assert torch.equal(a, b)


def test_padded_action_steps_do_not_enter_the_flow_loss(builder, config):
    policy = make_policy(config, "ki")
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["v"] = output

    policy.expert.action_out.register_forward_hook(keep)
    out = policy(mixed_batch(builder), generator=torch.Generator().manual_seed(1))
    out.parts["flow"].backward()
    v_grad = captured["v"].grad  # [2 flow examples, H, D]; example 0 has step 3 padded
    assert torch.count_nonzero(v_grad[0, 3]) == 0
    assert torch.count_nonzero(v_grad[0, 2]) > 0 and torch.count_nonzero(v_grad[1, 2]) > 0


def test_total_is_the_weighted_sum_and_naive_has_no_fast_loss(builder, config):
    policy = make_policy(config, "ki", flow_weight=10.0, lm_weight=0.5)
    out = policy(mixed_batch(builder))
    expected = 10.0 * out.parts["flow"] + out.parts["fast"] + 0.5 * out.parts["lm"]
    torch.testing.assert_close(out.total, expected)
    naive = make_policy(config, "naive")(mixed_batch(builder))
    assert naive.parts["fast"] == 0 and naive.parts["lm"] > 0


def test_k_flow_samples_keep_the_backbone_gradient(builder, config):
    batch = mixed_batch(builder)
    one, four = make_policy(config, "ki"), make_policy(config, "ki", flow_samples_per_example=4)
    four.load_state_dict(one.state_dict())
    g1 = grads_of(one, one(batch).total)
    g4 = grads_of(four, four(batch).total)
    for name, grad in g1.items():
        if name.startswith("backbone.") and grad is not None:
            torch.testing.assert_close(grad, g4[name], atol=1e-6, rtol=1e-5)
    assert not torch.equal(g1["expert.action_in.weight"], g4["expert.action_in.weight"])


def test_frozen_backbone_has_no_trainable_parameters(config):
    policy = make_policy(config, "frozen")
    assert not any(p.requires_grad for p in policy.backbone.parameters())
    assert all(p.requires_grad for p in policy.expert.parameters())


def test_state_token_option(builder, config):
    policy = make_policy(config, "ki", state_input="token")
    batch = mixed_batch(builder)
    out = policy(batch)
    grads = grads_of(policy, out.parts["flow"])
    assert grads["expert.state_in.weight"].abs().sum() > 0


def test_bad_batches_name_the_problem(builder, config):
    policy = make_policy(config, "ki")
    batch = mixed_batch(builder)
    wrong_dim = dataclasses.replace(batch, actions=torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match=r"actions: expected .*action dim 3"):
        policy(wrong_dim)
    nan = dataclasses.replace(batch, actions=batch.actions.clone())
    nan.actions[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="actions: contains NaN"):
        policy(nan)
    nan_image = dataclasses.replace(batch, images=batch.images.clone())
    nan_image.images[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images: contains NaN"):
        policy(nan_image)
    no_image = dataclasses.replace(batch, image_mask=torch.tensor([True, False, False]))
    with pytest.raises(ValueError, match=r"images: examples \[1\] need an image"):
        policy(no_image)
    big_ids = dataclasses.replace(batch, prefix_ids=batch.prefix_ids + 10_000)
    with pytest.raises(ValueError, match="prefix_ids"):
        policy(big_ids)
    with pytest.raises(ValueError, match="images: expected"):
        policy.sample_actions(dataclasses.replace(batch, images=torch.zeros(3, 3, 8, 8)))
