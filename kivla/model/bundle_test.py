import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kivla.data.world_env import VectorEnv, WorldConfig
from kivla.model.bundle import PolicyBundle
from kivla.model.testing import IMAGE_SIZE, tiny_world_bundle


def _obs(n=2):
    obs, _ = VectorEnv(WorldConfig(image_size=IMAGE_SIZE), n).reset(list(range(n)))
    return obs


def test_save_load_round_trip_acts_identically(tmp_path):
    bundle = tiny_world_bundle("ki")
    path = bundle.save(tmp_path / "policy")
    loaded = PolicyBundle.load(path)
    assert loaded.recipe == "ki" and loaded.config == bundle.config
    assert loaded.builder.layout == bundle.builder.layout
    obs = _obs()
    a = bundle.act(obs, generator=torch.Generator().manual_seed(0))
    b = loaded.act(obs, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, bundle.horizon, 4) and np.array_equal(a, b)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_actions_are_unnormalized_with_the_action_bounds(tmp_path):
    bundle = tiny_world_bundle("stopgrad")
    low, high = bundle.normalizer.bounds["action"]
    assert torch.allclose(bundle.policy.action_low, torch.as_tensor(low, dtype=torch.float32))
    assert torch.allclose(bundle.policy.action_high, torch.as_tensor(high, dtype=torch.float32))


def test_ema_weights_are_preferred_when_present(tmp_path):
    bundle = tiny_world_bundle("ki")
    path = bundle.save(tmp_path / "policy")
    state = {f"module.{k}": torch.zeros_like(v) for k, v in bundle.policy.state_dict().items()}
    save_file({**state, "n_averaged": torch.tensor(3)}, path / "ema.safetensors")
    ema = PolicyBundle.load(path)
    raw = PolicyBundle.load(path, weights="model")
    assert all((p == 0).all() for p in ema.policy.parameters())
    assert any((p != 0).any() for p in raw.policy.parameters())


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"policy\.json"):
        PolicyBundle.load(tmp_path)
    path = tiny_world_bundle("ki").save(tmp_path / "p")
    meta = json.loads((path / "policy.json").read_text())
    (path / "policy.json").write_text(json.dumps({**meta, "format": "other/9"}))
    with pytest.raises(ValueError, match="format"):
        PolicyBundle.load(path)
    with pytest.raises(ValueError, match="weights"):
        PolicyBundle.load(tiny_world_bundle("ki").save(tmp_path / "q"), weights="best")
    with pytest.raises(ValueError, match="obs: missing 'image'"):
        tiny_world_bundle("ki").act({"instruction": ["reach the red circle"]})
