import pytest
import torch

from kivla.model.config import recipe_config, tiny_test_config
from kivla.model.io import load_policy, save_policy
from kivla.model.policy import KIPolicy
from kivla.model.synthetic import synthetic_batch


def test_round_trip_keeps_weights_bounds_and_samples(tmp_path):
    config = recipe_config("ki", tiny_test_config(), state_input="token")
    policy = KIPolicy(config).eval()
    policy.set_action_bounds(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 5.0]))
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt").eval()
    assert loaded.config == config
    batch = synthetic_batch(config, 2, prompt_len=5)
    noise = torch.randn(2, 4, 3)
    assert torch.equal(policy.sample_actions(batch, noise=noise), loaded.sample_actions(batch, noise=noise))
    assert not list(tmp_path.joinpath("ckpt").glob(".*"))  # no temp files left behind


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_policy(tmp_path)
