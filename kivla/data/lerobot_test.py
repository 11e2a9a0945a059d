"""LeRobot v3 write -> read: layout, exact round trip, codec tolerance, clear errors, atomicity."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kivla.data import lerobot_format as fmt
from kivla.data.lerobot_read import LeRobotDataset
from kivla.data.world_dataset import episode_seed, generate_dataset
from kivla.data.world_env import TabletopEnv, WorldConfig
from kivla.data.world_expert import rollout_expert

EPISODES = 6


@pytest.fixture(scope="module")
def video_ds(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("v") / "ds", EPISODES, seed=7, progress=False)


@pytest.fixture(scope="module")
def png_ds(tmp_path_factory):
    # Small files so that the reader has to stitch several data files together.
    root = tmp_path_factory.mktemp("p") / "ds"
    return generate_dataset(root, EPISODES, seed=7, video=False, frames_per_file=150, progress=False)


@pytest.fixture(scope="module")
def video_multi_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("m") / "ds"
    return generate_dataset(root, EPISODES, seed=7, frames_per_file=150, progress=False)


@pytest.fixture(scope="module")
def av1_ds(tmp_path_factory):
    # AV1 (libsvtav1) is what LeRobot itself writes by default.
    root = tmp_path_factory.mktemp("a") / "ds"
    return generate_dataset(
        root, EPISODES, seed=7, video_codec="libsvtav1", frames_per_file=250, progress=False
    )


def _expected(index: int) -> dict:
    return rollout_expert(TabletopEnv(WorldConfig()), episode_seed(7, index))


def test_layout_and_metadata(video_ds):
    for rel in (
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "data/chunk-000/file-000.parquet",
        "videos/observation.images.top/chunk-000/file-000.mp4",
    ):
        assert (video_ds / rel).is_file(), rel
    info = json.loads((video_ds / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_episodes"] == EPISODES
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert features["action"] == {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]}
    assert features["observation.images.top"]["dtype"] == "video"
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in features
    stats = json.loads((video_ds / "meta/stats.json").read_text())
    for key in ("action", "observation.state", "observation.images.top"):
        assert {"mean", "std", "min", "max", "q01", "q99"} <= set(stats[key])
    assert np.array(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)
    episodes = pq.read_table(video_ds / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in episodes] == list(range(EPISODES))
    assert episodes[1]["dataset_from_index"] == episodes[0]["dataset_to_index"]
    key = "videos/observation.images.top"
    assert episodes[1][f"{key}/from_timestamp"] == pytest.approx(episodes[0][f"{key}/to_timestamp"])
    tasks = pq.read_table(video_ds / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]


@pytest.mark.parametrize("which", ["video_ds", "png_ds", "video_multi_ds", "av1_ds"])
def test_round_trip(which, request):
    root = request.getfixturevalue(which)
    ds = LeRobotDataset(root, horizon=16)
    assert ds.num_episodes == EPISODES and ds.is_video == (which != "png_ds")
    if which == "av1_ds":
        assert ds.info["features"]["observation.images.top"]["info"]["video.codec"] == "av1"
    for index in (0, 3, EPISODES - 1):
        want = _expected(index)
        start, end = ds.episode_rows(index)
        np.testing.assert_array_equal(ds.actions[start:end], want["actions"])  # exact
        np.testing.assert_array_equal(ds.states[start:end], want["states"])
        images = np.stack([ds.image(r) for r in range(start, end)]).astype(np.float64)
        err = np.abs(images - want["images"])
        if which == "png_ds":
            assert err.max() == 0
        else:
            # yuv420p halves the chroma resolution: sharp color edges blur over 2x2 pixels.
            assert err.mean(axis=(1, 2, 3)).max() < 4.0
            pooled = lambda x: x.reshape(len(x), 32, 2, 32, 2, 3).mean((2, 4))  # noqa: E731
            assert np.quantile(np.abs(pooled(images) - pooled(want["images"])), 0.99) < 16
        item = ds[start + 2]
        assert item["task"] == want["task"].instruction and item["frame_index"] == 2
        np.testing.assert_array_equal(item["actions"], want["actions"][2:18])


def test_chunks_pad_by_repeating_the_last_action(png_ds):
    ds = LeRobotDataset(png_ds, horizon=50)
    start, end = ds.episode_rows(2)
    item = ds[end - 3]
    assert item["action_is_pad"].tolist() == [False] * 3 + [True] * 47
    np.testing.assert_array_equal(item["actions"][3:], np.repeat(ds.actions[end - 1][None], 47, 0))
    assert not ds[start]["action_is_pad"][: min(50, end - start)].any()


def test_multiple_data_files(png_ds, video_multi_ds):
    assert len(list(png_ds.glob("data/chunk-000/file-*.parquet"))) >= 3
    videos = list(video_multi_ds.glob("videos/observation.images.top/chunk-000/file-*.mp4"))
    assert len(videos) == len(list(video_multi_ds.glob("data/chunk-000/file-*.parquet"))) >= 3


def test_dataloader_batches(video_ds):
    from kivla.data.normalize import QuantileNormalizer

    ds = LeRobotDataset(video_ds, horizon=10)
    ds.normalizer = QuantileNormalizer.from_stats(ds.stats)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)))
    assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == torch.uint8
    assert batch["actions"].shape == (8, 10, 4) and batch["action_is_pad"].dtype == torch.bool
    assert batch["actions"].abs().max() < 1.5 and len(batch["task"]) == 8


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_missing_file_is_named(video_ds, tmp_path):
    root = _copy(video_ds, tmp_path)
    (root / "videos/observation.images.top/chunk-000/file-000.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=r"file-000\.mp4"):
        LeRobotDataset(root)
    (root / "meta/tasks.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"tasks\.parquet"):
        LeRobotDataset(root)
    with pytest.raises(FileNotFoundError, match=r"info\.json"):
        LeRobotDataset(tmp_path)


def _rewrite_data(root, fn):
    path = root / "data/chunk-000/file-000.parquet"
    pq.write_table(fn(pq.read_table(path)), path)


def test_missing_column_is_named(video_ds, tmp_path):
    root = _copy(video_ds, tmp_path)
    _rewrite_data(root, lambda t: t.drop_columns(["action"]))
    with pytest.raises(ValueError, match="missing column 'action'"):
        LeRobotDataset(root)


def test_missing_feature_is_named(video_ds, tmp_path):
    root = _copy(video_ds, tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]["observation.state"]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"observation\.state"):
        LeRobotDataset(root)


def test_shape_mismatch_is_reported(video_ds, tmp_path):
    root = _copy(video_ds, tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["action"]["shape"] = [7]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="'action': expected 7 values"):
        LeRobotDataset(root)


def test_nan_actions_are_reported(video_ds, tmp_path):
    root = _copy(video_ds, tmp_path)

    def poison(table):
        actions = np.stack(table["action"].to_numpy(zero_copy_only=False)).astype(np.float32)
        actions[5, 1] = np.nan
        flat = pa.array(actions.reshape(-1), pa.float32())
        column = pa.FixedSizeListArray.from_arrays(flat, 4)
        return table.set_column(table.column_names.index("action"), "action", column)

    _rewrite_data(root, poison)
    with pytest.raises(ValueError, match=r"NaN.*episode 0 frame 5"):
        LeRobotDataset(root)


def test_reads_list_columns_and_unnamed_task_index(video_ds, tmp_path):
    # LeRobot written through pandas: variable-length list columns, task strings as __index_level_0__.
    root = _copy(video_ds, tmp_path)

    def as_lists(table):
        for key in ("action", "observation.state"):
            values = table[key].combine_chunks()
            lists = pa.ListArray.from_arrays(
                pa.array(np.arange(len(values) + 1) * values.type.list_size, pa.int32()), values.flatten()
            )
            table = table.set_column(table.column_names.index(key), key, lists)
        return table

    _rewrite_data(root, as_lists)
    tasks = pq.read_table(root / fmt.TASKS_PATH)
    pq.write_table(tasks.rename_columns(["task_index", "__index_level_0__"]), root / fmt.TASKS_PATH)
    ds, ref = LeRobotDataset(root, horizon=5), LeRobotDataset(video_ds, horizon=5)
    np.testing.assert_array_equal(ds.actions, ref.actions)
    assert ds[10]["task"] == ref[10]["task"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import kivla.data.world_dataset as wd

    calls = {"n": 0}
    real = wd.rollout_expert

    def flaky(env, seed, options=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(env, seed, options)

    monkeypatch.setattr(wd, "rollout_expert", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "ds", 5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_without_flag(video_ds, tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(tmp_path / "ds", 1, progress=False)
    generate_dataset(tmp_path / "ds", 2, progress=False, overwrite=True)
    assert not (tmp_path / "ds" / "keep.txt").exists() and LeRobotDataset(tmp_path / "ds").num_episodes == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_unknown_codec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="video_codec"):
        generate_dataset(tmp_path / "ds", 1, video_codec="vp9", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_world_annotations_round_trip(png_ds):
    ds = LeRobotDataset(png_ds, horizon=16)
    assert ds.annotation_keys == (fmt.GOAL_KEY, fmt.LABELS_KEY, fmt.REFER_KEY)
    assert ds.info["features"][fmt.LABELS_KEY] == {"dtype": "uint8", "shape": [64 * 64], "names": None}
    for index in (0, EPISODES - 1):
        want = _expected(index)
        start, end = ds.episode_rows(index)
        labels = ds.annotations[fmt.LABELS_KEY][start:end].reshape(-1, 64, 64)
        np.testing.assert_array_equal(labels, want["labels"])
        assert (ds.annotations[fmt.REFER_KEY][start:end] == want["refer"]).all()
        goal = np.round(want["goal"] * fmt.GOAL_UNITS)  # where the target ends: the same every frame
        assert (ds.annotations[fmt.GOAL_KEY][start:end] == goal).all()
        item = ds[start + 1]
        np.testing.assert_array_equal(item["annotations"][fmt.LABELS_KEY], want["labels"][1].ravel())
    target = want["refer"][0]
    assert target > 0 and (want["labels"][0] == target).any()  # the named target is drawn


def test_datasets_without_annotations_read_as_before(tmp_path):
    root = generate_dataset(tmp_path / "ds", 2, seed=3, video=False, annotations=False, progress=False)
    ds = LeRobotDataset(root, horizon=8)
    assert ds.annotation_keys == () and "annotations" not in ds[0]
    assert not any(k.startswith(fmt.ANNOTATION_PREFIX) for k in ds.info["features"])


def test_annotation_errors_name_the_key(tmp_path):
    from kivla.data.lerobot_write import LeRobotWriter
    from kivla.data.world_env import ACTION_NAMES, FPS, STATE_NAMES

    writer = LeRobotWriter(tmp_path / "w", FPS, 64, ACTION_NAMES, STATE_NAMES, video=False)
    want = _expected(0)
    args = (want["images"], want["states"], want["actions"], "reach the red circle")
    with pytest.raises(ValueError, match=r"annotations\['annotation\.x'\].*integer"):
        writer.add_episode(*args, {"annotation.x": np.zeros(len(want["actions"]), np.float32)})
    writer.add_episode(*args, {"annotation.x": np.zeros((len(want["actions"]), 2), np.int64)})
    with pytest.raises(ValueError, match="first episode"):
        writer.add_episode(*args, {"annotation.x": np.zeros((len(want["actions"]), 3), np.int64)})
