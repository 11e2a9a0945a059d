"""Generated datasets: seeding and splits, checked on what was written."""

import numpy as np
import pyarrow.parquet as pq

from kivla.data.lerobot_read import LeRobotDataset
from kivla.data.world_dataset import generate_dataset
from kivla.data.world_scene import COLOR_NAMES, SHAPES
from kivla.data.world_tasks import FAMILIES, is_held_out, parse_instruction


def _compositions(root) -> set[tuple[int, int, int]]:
    tasks = pq.read_table(root / "meta/tasks.parquet")["task"].to_pylist()
    parsed = [parse_instruction(t) for t in tasks]
    assert None not in parsed
    return {(COLOR_NAMES.index(c), SHAPES.index(s), FAMILIES.index(f)) for c, s, f in parsed}


def test_ood_dataset_disjoint_from_train_dataset(tmp_path):
    train = generate_dataset(tmp_path / "train", 24, seed=0, video=False, progress=False)
    ood = generate_dataset(tmp_path / "ood", 12, seed=0, video=False, split="ood", progress=False)
    train_set, ood_set = _compositions(train), _compositions(ood)
    assert train_set.isdisjoint(ood_set)
    assert all(is_held_out(*t) for t in ood_set) and not any(is_held_out(*t) for t in train_set)


def test_same_seed_same_dataset(tmp_path):
    a = LeRobotDataset(generate_dataset(tmp_path / "a", 3, seed=4, video=False, progress=False))
    b = LeRobotDataset(generate_dataset(tmp_path / "b", 3, seed=4, video=False, progress=False))
    c = LeRobotDataset(generate_dataset(tmp_path / "c", 3, seed=5, video=False, progress=False))
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.states, b.states)
    assert all(np.array_equal(a.image(r), b.image(r)) for r in range(0, len(a), 7))
    assert a.tasks == b.tasks and a.tasks != c.tasks


def test_privileged_state_dataset(tmp_path):
    from kivla.data.world_env import PRIVILEGED_NAMES, STATE_DIM, STATE_NAMES

    plain = LeRobotDataset(generate_dataset(tmp_path / "a", 2, seed=1, video=False, progress=False))
    root = generate_dataset(tmp_path / "b", 2, seed=1, video=False, progress=False, privileged_state=True)
    privileged = LeRobotDataset(root)
    assert privileged.state_dim == STATE_DIM + len(PRIVILEGED_NAMES)
    assert privileged.info["features"]["observation.state"]["names"] == [*STATE_NAMES, *PRIVILEGED_NAMES]
    np.testing.assert_array_equal(privileged.states[:, :STATE_DIM], plain.states)
    np.testing.assert_array_equal(privileged.actions, plain.actions)
