import math

import numpy as np
import pytest
import torch

from kivla.data.world_dataset import generate_dataset
from kivla.eval.gradients import GradientStudyConfig, _Moments, gradient_study, markdown, robot_batches
from kivla.model.testing import IMAGE_SIZE, tiny_world_bundle


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("grad") / "ds"
    return generate_dataset(root, episodes=2, image_size=IMAGE_SIZE, seed=4, video=False, progress=False)


def test_moments_match_numpy():
    g = np.random.default_rng(0).normal(size=(6, 10))
    m = _Moments()
    for row in g:
        m.add(torch.from_numpy(row))
    s = m.stats()
    assert s["variance"] == pytest.approx(g.var(axis=0, ddof=1).sum())
    assert s["mean_norm"] == pytest.approx(np.linalg.norm(g, axis=1).mean())
    assert s["relative_variance"] == pytest.approx(s["variance"] / (g**2).sum(axis=1).mean())


def test_naive_study_shapes_and_values(dataset_dir):
    bundle = tiny_world_bundle(recipe="naive", discrete_target="binning")
    config = GradientStudyConfig(bins=4, batches=3, batch_size=4)
    study = gradient_study(bundle.policy, robot_batches(bundle, dataset_dir, config), config)
    assert [b["t_low"] for b in study["flow"]] == [0.0, 0.25, 0.5, 0.75]
    for b in study["flow"]:
        assert b["mean_norm"] > 0 and b["variance"] > 0 and 0 < b["relative_variance"] < 1.5
    assert study["fast"] is not None and study["fast"]["mean_norm"] > 0
    assert study["parameters"] == sum(p.numel() for p in bundle.policy.backbone.parameters())
    assert math.isfinite(study["flow_norm_spread"]) and study["flow_norm_spread"] >= 1
    assert "| discrete CE | any |" in markdown(study)


def test_insulated_flow_puts_zero_gradient_on_the_backbone(dataset_dir):
    bundle = tiny_world_bundle(recipe="ki", discrete_target="binning")
    config = GradientStudyConfig(bins=2, batches=2, batch_size=3)
    study = gradient_study(bundle.policy, robot_batches(bundle, dataset_dir, config), config)
    assert all(b["mean_norm"] == 0.0 and b["variance"] == 0.0 for b in study["flow"])
    assert study["fast"]["mean_norm"] > 0


def test_without_tokens_there_is_no_ce_line(dataset_dir):
    bundle = tiny_world_bundle(recipe="naive")
    config = GradientStudyConfig(bins=2, batches=2, batch_size=2)
    study = gradient_study(bundle.policy, robot_batches(bundle, dataset_dir, config), config)
    assert study["fast"] is None
    with pytest.raises(ValueError, match="frozen"):
        gradient_study(tiny_world_bundle(recipe="frozen").policy, robot_batches(bundle, dataset_dir, config))
