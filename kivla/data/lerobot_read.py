"""`LeRobotDataset`: a torch Dataset over the frames of a LeRobot v3.0 dataset, with action chunks.

Item i (a frame) gives the image at that frame, the state, the task text and the H actions from
that frame on; steps past the episode end repeat the last action and are flagged in
`action_is_pad`. All non-image columns are loaded into memory at construction (small); video
frames are decoded one whole episode at a time (seek to the episode's from_timestamp, decode to
its to_timestamp) and kept in an LRU cache of episodes, so random access costs one decode per
episode per worker.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from kivla.data import lerobot_format as fmt

REQUIRED_COLUMNS = ("index", "episode_index", "frame_index", "timestamp", "task_index")


class LeRobotDataset(torch.utils.data.Dataset):
    """Frames of a LeRobot v3.0 dataset with H-step action chunks (see module docstring)."""

    def __init__(
        self,
        root: str | Path,
        horizon: int = 50,
        normalizer=None,
        image_key: str | None = None,
        action_key: str = fmt.ACTION_KEY,
        state_key: str = fmt.STATE_KEY,
        cache_episodes: int = 512,
    ):
        if horizon < 1:
            raise ValueError(f"horizon: expected >= 1, got {horizon}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"LeRobot dataset: no such directory {self.root}")
        self.horizon, self.normalizer = horizon, normalizer
        self.action_key, self.state_key = action_key, state_key
        self.info = fmt.read_json(self.root / fmt.INFO_PATH)
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith("v3"):
            raise ValueError(f"meta/info.json codebase_version: expected v3.x, got {version!r}")
        self.fps = float(self.info["fps"])
        features = self.info.get("features", {})
        for key in (action_key, state_key):
            if key not in features:
                raise ValueError(
                    f"meta/info.json features: missing feature {key!r} (have {sorted(features)})"
                )
        self.action_dim = int(np.prod(features[action_key]["shape"]))
        self.state_dim = int(np.prod(features[state_key]["shape"]))
        visual = [k for k, f in features.items() if f.get("dtype") in ("video", "image")]
        if image_key is None:
            image_key = visual[0] if visual else None
        elif image_key not in visual:
            raise ValueError(
                f"image_key: feature {image_key!r} is not an image/video feature (have {visual})"
            )
        self.image_key = image_key
        # Integer per-frame annotations (kivla's world writes them; other datasets have none).
        self.annotation_keys = tuple(sorted(k for k in features if k.startswith(fmt.ANNOTATION_PREFIX)))
        self.annotation_dims = {k: int(np.prod(features[k]["shape"])) for k in self.annotation_keys}
        self.is_video = image_key is not None and features[image_key]["dtype"] == "video"
        self.tasks = _read_tasks(self.root / fmt.TASKS_PATH)
        self.episodes = _read_episodes(self.root)
        self._load_frames()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_episodes = cache_episodes
        self._stats: dict | None = None

    # -- loading -------------------------------------------------------------------------------
    def _load_frames(self) -> None:
        ep = self.episodes
        files = sorted(
            {(int(c), int(f)) for c, f in zip(ep["data/chunk_index"], ep["data/file_index"], strict=True)}
        )
        wanted = [*REQUIRED_COLUMNS, self.action_key, self.state_key, *self.annotation_keys]
        if self.image_key is not None and not self.is_video:
            wanted.append(self.image_key)
        tables = []
        for chunk, file in files:
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise FileNotFoundError(f"LeRobot dataset: missing data file {path}")
            names = pq.read_schema(path).names
            for column in wanted:
                if column not in names:
                    raise ValueError(f"{path}: missing column {column!r}")
            tables.append(pq.read_table(path, columns=wanted))
        table = pa.concat_tables(tables)
        order = np.argsort(table["index"].to_numpy(), kind="stable")
        self.index = table["index"].to_numpy()[order]
        self.episode_index = table["episode_index"].to_numpy()[order]
        self.frame_index = table["frame_index"].to_numpy()[order]
        self.timestamp = table["timestamp"].to_numpy().astype(np.float64)[order]
        self.task_index = table["task_index"].to_numpy()[order]
        self.actions = _matrix(table[self.action_key], self.action_dim, self.action_key)[order]
        self.states = _matrix(table[self.state_key], self.state_dim, self.state_key)[order]
        self.annotations = {
            key: _integer_matrix(table[key], self.annotation_dims[key], key)[order]
            for key in self.annotation_keys
        }
        self._images = (
            table[self.image_key].take(pa.array(order)) if self.image_key and not self.is_video else None
        )
        bad = np.flatnonzero(~np.isfinite(self.actions).all(axis=1))
        if bad.size:
            r = bad[0]
            raise ValueError(
                f"{self.action_key}: NaN/inf in {bad.size} frames, first at episode "
                f"{self.episode_index[r]} frame {self.frame_index[r]}"
            )
        # Row range of every episode, from the episodes table (dataset_from/to_index are global indices).
        self._ep_row = {int(e): i for i, e in enumerate(ep["episode_index"])}
        self._ep_start = np.searchsorted(self.index, ep["dataset_from_index"])
        self._ep_end = np.searchsorted(self.index, ep["dataset_to_index"])
        lengths = self._ep_end - self._ep_start
        if not np.array_equal(lengths, ep["length"]):
            raise ValueError("meta/episodes: episode lengths do not match the frames in data/")
        if self.is_video:
            key = self.image_key
            for column in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
                if f"videos/{key}/{column}" not in ep:
                    raise ValueError(f"meta/episodes: missing column 'videos/{key}/{column}'")
            for c, f in {
                (int(c), int(f))
                for c, f in zip(ep[f"videos/{key}/chunk_index"], ep[f"videos/{key}/file_index"], strict=True)
            }:
                path = self._video_path(c, f)
                if not path.is_file():
                    raise FileNotFoundError(f"LeRobot dataset: missing video file {path}")

    def _video_path(self, chunk: int, file: int) -> Path:
        rel = self.info["video_path"].format(video_key=self.image_key, chunk_index=chunk, file_index=file)
        return self.root / rel

    # -- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_episodes(self) -> int:
        return len(self._ep_start)

    @property
    def stats(self) -> dict:
        """meta/stats.json as a dict."""
        if self._stats is None:
            self._stats = fmt.read_json(self.root / fmt.STATS_PATH)
        return self._stats

    def episode_rows(self, episode: int) -> tuple[int, int]:
        """[start, end) rows of an episode (by episode_index)."""
        i = self._ep_row[episode]
        return int(self._ep_start[i]), int(self._ep_end[i])

    def action_chunk(self, row: int, normalizer=None) -> tuple[np.ndarray, np.ndarray]:
        """(actions [H, D] float32, action_is_pad [H]) of a frame, normalized by `normalizer` or the
        dataset's; no image is decoded (tokenizer fitting reads only these)."""
        if not 0 <= row < len(self):
            raise IndexError(f"index {row} out of range for {len(self)} frames")
        _start, end = self.episode_rows(int(self.episode_index[row]))
        steps = np.minimum(np.arange(row, row + self.horizon), end - 1)
        actions = self.actions[steps]  # [H, D]: past the end, the last action repeats
        normalizer = normalizer if normalizer is not None else self.normalizer
        if normalizer is not None:
            actions = normalizer.normalize(self.action_key, actions)
        return actions.astype(np.float32), np.arange(row, row + self.horizon) >= end

    def __getitem__(self, row: int) -> dict:
        actions, is_pad = self.action_chunk(row)
        episode = int(self.episode_index[row])
        state = self.states[row]
        if self.normalizer is not None:
            state = self.normalizer.normalize(self.state_key, state)
        item = {
            "actions": actions,
            "action_is_pad": is_pad,
            "state": state.astype(np.float32),
            "task": self.tasks[int(self.task_index[row])],
            "episode_index": episode,
            "frame_index": int(self.frame_index[row]),
        }
        if self.image_key is not None:
            item["image"] = self.image(row)
        if self.annotations:
            item["annotations"] = {key: values[row] for key, values in self.annotations.items()}
        return item

    def image(self, row: int) -> np.ndarray:
        """uint8 [H, W, 3] image of a frame."""
        if not self.is_video:
            from PIL import Image

            cell = self._images[row].as_py()
            data = cell["bytes"] if isinstance(cell, dict) else cell
            return np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # writable, for torch
        episode = int(self.episode_index[row])
        frames = self._episode_frames(episode)
        local = round(self.timestamp[row] * self.fps)
        return frames[min(local, len(frames) - 1)]

    def _episode_frames(self, episode: int) -> np.ndarray:
        if episode in self._cache:
            self._cache.move_to_end(episode)
            return self._cache[episode]
        i, key = self._ep_row[episode], self.image_key
        ep = self.episodes
        path = self._video_path(
            int(ep[f"videos/{key}/chunk_index"][i]), int(ep[f"videos/{key}/file_index"][i])
        )
        frames = decode_frames(
            path, float(ep[f"videos/{key}/from_timestamp"][i]), int(ep["length"][i]), self.fps
        )
        self._cache[episode] = frames
        while len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return frames


def decode_frames(path: Path, from_timestamp: float, count: int, fps: float) -> np.ndarray:
    """uint8 [count, H, W, 3]: `count` frames of a video from `from_timestamp` on (by timestamp)."""
    import av
    from av.video.reformatter import VideoReformatter

    # One reformatter keeps its swscale context between frames: ~7x faster than frame.to_ndarray(format=...).
    reformatter = VideoReformatter()
    first = round(from_timestamp * fps)
    frames: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(int(from_timestamp / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            k = round(frame.time * fps) - first
            if k >= count:
                break
            if k >= 0:
                frames[k] = reformatter.reformat(frame, format="rgb24").to_ndarray()
    missing = [k for k in range(count) if k not in frames]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} frames missing from timestamp {from_timestamp:.3f} (count {count})"
        )
    return np.stack([frames[k] for k in range(count)])


def _matrix(column: pa.ChunkedArray, dim: int, name: str) -> np.ndarray:
    """[N, dim] float32 from a list / fixed-size-list column; checks the shape against info.json."""
    column = column.combine_chunks()
    if (
        not pa.types.is_list(column.type)
        and not pa.types.is_fixed_size_list(column.type)
        and not pa.types.is_large_list(column.type)
    ):
        raise ValueError(
            f"column {name!r}: expected a list of {dim} numbers per frame, got type {column.type}"
        )
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != dim or lengths.max() != dim):
        raise ValueError(
            f"column {name!r}: expected {dim} values per frame (meta/info.json shape), "
            f"got {sorted(set(lengths.tolist()))[:5]}"
        )
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(column), dim)


def _integer_matrix(column: pa.ChunkedArray, dim: int, name: str) -> np.ndarray:
    """[N, dim] integers from a fixed-size-list column of an annotation feature."""
    column = column.combine_chunks()
    if not pa.types.is_fixed_size_list(column.type) or not pa.types.is_integer(column.type.value_type):
        raise ValueError(f"column {name!r}: expected a fixed-size list of integers, got type {column.type}")
    if column.type.list_size != dim:
        raise ValueError(
            f"column {name!r}: expected {dim} values per frame (meta/info.json shape), "
            f"got {column.type.list_size}"
        )
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).reshape(len(column), dim)


def _read_tasks(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise FileNotFoundError(f"LeRobot dataset: missing file {path}")
    table = pq.read_table(path)
    if "task_index" not in table.column_names:
        raise ValueError(f"{path}: missing column 'task_index'")
    # pandas writes the task strings as its index: a column named "task" or "__index_level_0__".
    names = [n for n in ("task", "__index_level_0__") if n in table.column_names]
    if not names:
        raise ValueError(f"{path}: missing column 'task' (the task strings)")
    return dict(zip(table["task_index"].to_pylist(), table[names[0]].to_pylist(), strict=True))


def _read_episodes(root: Path) -> dict[str, np.ndarray]:
    paths = sorted(root.glob("meta/episodes/chunk-*/file-*.parquet"))
    if not paths:
        raise FileNotFoundError(
            f"LeRobot dataset: missing file {root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)}"
        )
    needed = [
        "episode_index",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
    ]
    tables = []
    for path in paths:
        schema_names = pq.read_schema(path).names
        for column in needed:
            if column not in schema_names:
                raise ValueError(f"{path}: missing column {column!r}")
        keep = [n for n in schema_names if not n.startswith("stats/")]
        tables.append(pq.read_table(path, columns=keep))
    table = pa.concat_tables(tables, promote_options="default")
    out = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names if name != "tasks"}
    order = np.argsort(out["episode_index"], kind="stable")
    return {k: v[order] for k, v in out.items()}
