from importlib.util import find_spec

import numpy as np
import pytest

from kivla.data.lerobot_read import LeRobotDataset
from kivla.data.metaworld_dataset import generate_metaworld_dataset
from kivla.data.metaworld_env import MetaWorldConfig
from kivla.data.metaworld_tasks import INSTRUCTIONS

# Skipped only where the extra is missing (`make test` installs it); a skipif, not importorskip:
# importing metaworld would load mujoco before kivla sets MUJOCO_GL.
pytestmark = pytest.mark.skipif(find_spec("metaworld") is None, reason="pip install kivla[metaworld]")


def test_one_expert_episode_reads_back(tmp_path):
    root = generate_metaworld_dataset(
        tmp_path / "mw", "reach", episodes=1, config=MetaWorldConfig(image_size=64), progress=False
    )
    ds = LeRobotDataset(root, horizon=10)
    assert ds.num_episodes == 1 and ds.info["codebase_version"] == "v3.0" and ds.fps == 80
    assert ds.state_dim == 4 and ds.action_dim == 4 and ds.tasks == {0: INSTRUCTIONS["reach-v3"]}
    assert 20 < len(ds) < 200 and np.abs(ds.actions).max() <= 1.0
    item = ds[len(ds) - 1]
    assert item["image"].shape == (64, 64, 3) and item["action_is_pad"][1:].all()
    assert item["task"] == "reach the goal with the gripper"
    assert not list(tmp_path.glob(".tmp-*"))  # written in place atomically


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="episodes: expected >= 1"):
        generate_metaworld_dataset(tmp_path / "a", "reach", episodes=0)
    with pytest.raises(ValueError, match="unknown"):
        generate_metaworld_dataset(tmp_path / "a", "reach,nope", episodes=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        generate_metaworld_dataset(tmp_path / "full", "reach", episodes=1, progress=False)
