import numpy as np
import pytest

from kivla.data.world_dataset import generate_dataset
from kivla.eval.validation import ValidationConfig, flow_validation
from kivla.model.testing import HORIZON, IMAGE_SIZE, tiny_world_bundle


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("val") / "ds"
    return generate_dataset(root, episodes=2, image_size=IMAGE_SIZE, seed=3, video=False, progress=False)


class Exact:
    """Wraps a bundle so that act returns the dataset's own chunks: the error must be zero."""

    def __init__(self, bundle, dataset, rows):
        self.bundle, self.builder, self.normalizer, self.horizon = (
            bundle,
            bundle.builder,
            bundle.normalizer,
            HORIZON,
        )
        self.queue = [dataset[int(r)]["actions"] for r in rows]

    def act(self, obs, num_steps=10, generator=None):
        n = len(obs["instruction"])
        out, self.queue = np.stack(self.queue[:n]), self.queue[n:]
        return out


def test_validation_error_is_finite_and_seeded(dataset_dir):
    bundle = tiny_world_bundle(recipe="ki")
    config = ValidationConfig(num_frames=20, batch_size=8)
    a, b = flow_validation(bundle, dataset_dir, config), flow_validation(bundle, dataset_dir, config)
    assert a == b
    assert a["frames"] == 20 and 0 < a["valid_steps"] <= 20 * HORIZON
    assert np.isfinite(a["mse"]) and a["mse"] > 0.01 and len(a["mse_per_dim"]) == 4


def test_perfect_predictions_score_zero(dataset_dir):
    from kivla.data.lerobot_read import LeRobotDataset

    bundle = tiny_world_bundle(recipe="ki")
    dataset = LeRobotDataset(dataset_dir, horizon=HORIZON)
    config = ValidationConfig(num_frames=10, batch_size=4, seed=1)
    rows = np.sort(np.random.default_rng([1, 13]).choice(len(dataset), 10, replace=False))
    assert flow_validation(Exact(bundle, dataset, rows), dataset, config)["mse"] == pytest.approx(
        0.0, abs=1e-10
    )


def test_horizon_mismatch_raises(dataset_dir):
    from kivla.data.lerobot_read import LeRobotDataset

    with pytest.raises(ValueError, match="horizon"):
        flow_validation(tiny_world_bundle(), LeRobotDataset(dataset_dir, horizon=HORIZON + 1))
