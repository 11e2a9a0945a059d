"""Write LeRobot v3.0 datasets (pyarrow + PyAV), and generate one from the built-in world.

Images go to an MP4 per file index (libx264 by default, yuv420p, a keyframe every second), or with
`video=False` into the parquet rows as LeRobot stores image features: a struct {bytes: PNG,
path: null}. The dataset is written into a temporary folder beside the target and renamed into
place at the end, so an interrupted run never leaves a complete-looking dataset.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kivla.data import lerobot_format as fmt

# Encoder -> (codec name in info.json, options). libx264 is the default; libsvtav1 is LeRobot's default.
VIDEO_CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "libx264": ("h264", {"crf": "12", "g": "10", "preset": "veryfast", "bf": "0"}),
    "libsvtav1": ("av1", {"crf": "20", "g": "10", "preset": "8"}),
    "mpeg4": ("mpeg4", {"qscale": "2", "g": "10"}),
}
PIXEL_SAMPLE = 64  # pixels kept per frame for the image statistics


class LeRobotWriter:
    """Streams episodes into a v3.0 layout under `root` (which must be empty or absent)."""

    def __init__(
        self,
        root: Path,
        fps: int,
        image_size: int,
        action_names: tuple[str, ...],
        state_names: tuple[str, ...],
        video: bool = True,
        frames_per_file: int = 100_000,
        robot_type: str = "kivla_tabletop",
        video_codec: str = "libx264",
    ):
        if video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec: expected one of {sorted(VIDEO_CODECS)}, got {video_codec!r}")
        if frames_per_file < 1:
            raise ValueError(f"frames_per_file: expected >= 1, got {frames_per_file}")
        self.root = Path(root)
        self.fps, self.image_size, self.video = fps, image_size, video
        self.action_names, self.state_names = action_names, state_names
        self.frames_per_file, self.robot_type = frames_per_file, robot_type
        self.video_codec = video_codec
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.rows: list[pa.Table] = []  # data rows of the current file
        self.file_counter, self.frames_in_file, self.total_frames = 0, 0, 0
        self.actions: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.pixels: list[np.ndarray] = []
        self.rng = np.random.default_rng(0)
        self.annotation_spec: dict[str, tuple[int, str]] = {}  # key -> (values a frame, dtype)
        self._container = None

    # -- episodes ------------------------------------------------------------------------------
    def add_episode(
        self,
        images: np.ndarray,
        states: np.ndarray,
        actions: np.ndarray,
        task: str,
        annotations: dict[str, np.ndarray] | None = None,
    ) -> None:
        """images uint8 [T, S, S, 3], states float32 [T, Ds], actions float32 [T, Da].

        `annotations`: extra per-frame integer features {key: [T, K]} (the world's dense labels);
        every episode must carry the same keys, shapes and dtypes as the first."""
        length = len(actions)
        size = self.image_size
        if images.shape != (length, size, size, 3) or images.dtype != np.uint8:
            raise ValueError(f"images: expected uint8 [{length}, {size}, {size}, 3], got {images.shape}")
        if states.shape != (length, len(self.state_names)):
            raise ValueError(f"states: expected [{length}, {len(self.state_names)}], got {states.shape}")
        if actions.shape != (length, len(self.action_names)) or not np.isfinite(actions).all():
            raise ValueError(
                f"actions: expected finite [{length}, {len(self.action_names)}], got {actions.shape}"
            )
        annotations = self._check_annotations(annotations or {}, length)
        if self.frames_in_file > 0 and self.frames_in_file + length > self.frames_per_file:
            self._close_file()
        task_index = self.tasks.setdefault(task, len(self.tasks))
        chunk, file = fmt.file_location(self.file_counter)
        episode_index = len(self.episodes)
        start = self.total_frames
        columns = {
            fmt.STATE_KEY: _fixed_list(states, pa.float32()),
            fmt.ACTION_KEY: _fixed_list(actions, pa.float32()),
            "timestamp": pa.array(np.arange(length, dtype=np.float32) / self.fps, pa.float32()),
            "frame_index": pa.array(np.arange(length), pa.int64()),
            "episode_index": pa.array(np.full(length, episode_index), pa.int64()),
            "index": pa.array(np.arange(start, start + length), pa.int64()),
            "task_index": pa.array(np.full(length, task_index), pa.int64()),
        }
        for key, values in annotations.items():
            columns[key] = _fixed_list(values, pa.from_numpy_dtype(values.dtype))
        episode = {
            "episode_index": episode_index,
            "tasks": [task],
            "length": length,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        if self.video:
            from_ts = self.frames_in_file / self.fps
            self._encode(images, chunk, file)
            key = fmt.IMAGE_KEY
            episode |= {
                f"videos/{key}/chunk_index": chunk,
                f"videos/{key}/file_index": file,
                f"videos/{key}/from_timestamp": from_ts,
                f"videos/{key}/to_timestamp": from_ts + length / self.fps,
            }
        else:
            columns = {fmt.IMAGE_KEY: _png_column(images), **columns}
        for name, values in ((fmt.ACTION_KEY, actions), (fmt.STATE_KEY, states)):
            for stat, vals in fmt.feature_stats(values).items():
                episode[f"stats/{name}/{stat}"] = vals
        episode |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        self.rows.append(pa.table(columns))
        self.episodes.append(episode)
        self.actions.append(actions)
        self.states.append(states)
        flat = images.reshape(-1, 3)
        self.pixels.append(flat[self.rng.integers(len(flat), size=PIXEL_SAMPLE * length)])
        self.frames_in_file += length
        self.total_frames += length

    def _check_annotations(self, annotations: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
        """The episode's annotations as [T, K] integer arrays, checked against the first episode's."""
        out = {}
        for key, values in annotations.items():
            values = np.asarray(values)
            values = values.reshape(length, -1) if values.ndim != 2 else values
            if len(values) != length or not np.issubdtype(values.dtype, np.integer):
                raise ValueError(
                    f"annotations[{key!r}]: expected an integer array [{length}, K], got "
                    f"{values.dtype} {list(np.shape(annotations[key]))}"
                )
            out[key] = values
        spec = {key: (v.shape[1], v.dtype.name) for key, v in out.items()}
        if self.episodes and spec != self.annotation_spec:
            raise ValueError(f"annotations: expected the first episode's {self.annotation_spec}, got {spec}")
        self.annotation_spec = spec
        return out

    # -- files ---------------------------------------------------------------------------------
    def _encode(self, images: np.ndarray, chunk: int, file: int) -> None:
        import av

        if self._container is None:
            path = self.root / fmt.VIDEO_PATH.format(
                video_key=fmt.IMAGE_KEY, chunk_index=chunk, file_index=file
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(path), mode="w")
            options = dict(VIDEO_CODECS[self.video_codec][1])
            stream = self._container.add_stream(self.video_codec, rate=self.fps, options=options)
            stream.width = stream.height = self.image_size
            stream.pix_fmt = "yuv420p"
            self._stream = stream
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames_in_file + i
            frame.time_base = Fraction(1, self.fps)
            self._container.mux(self._stream.encode(frame))

    def _close_file(self) -> None:
        if not self.rows:
            return
        chunk, file = fmt.file_location(self.file_counter)
        path = self.root / fmt.DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self.rows), path)
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None
        self.rows, self.frames_in_file = [], 0
        self.file_counter += 1

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        """`finish()` when the block ends normally, `abort()` on any exception (interrupts too)."""
        if exc_type is not None:
            self.abort()
            return
        try:
            self.finish()
        except BaseException:
            self.abort()
            raise

    def finish(self) -> None:
        """Close the open files and write meta/ (info, stats, tasks, episodes)."""
        if not self.episodes:
            raise ValueError("episodes: a dataset needs at least one episode")
        self._close_file()
        meta = self.root / "meta"
        (meta / "episodes/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(self.episodes),
            self.root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0),
        )
        write_tasks(self.root / fmt.TASKS_PATH, list(self.tasks))
        stats = {
            fmt.ACTION_KEY: fmt.feature_stats(np.concatenate(self.actions)),
            fmt.STATE_KEY: fmt.feature_stats(np.concatenate(self.states)),
            fmt.IMAGE_KEY: fmt.image_stats(np.concatenate(self.pixels), self.total_frames),
        }
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            table = pa.concat_tables(
                pq.read_table(p, columns=[key]) for p in sorted(self.root.glob("data/*/*.parquet"))
            )
            stats[key] = fmt.feature_stats(table[key].to_numpy()[:, None])
        (meta / "stats.json").write_text(json.dumps(stats, indent=2))
        (meta / "info.json").write_text(json.dumps(self.info(), indent=2))

    def info(self) -> dict:
        size = self.image_size
        image: dict = {"dtype": "video" if self.video else "image", "shape": [size, size, 3]}
        image["names"] = ["height", "width", "channels"]
        if self.video:
            image["info"] = {
                "video.height": size,
                "video.width": size,
                "video.codec": VIDEO_CODECS[self.video_codec][0],
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": self.fps,
                "video.channels": 3,
                "has_audio": False,
            }
        scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
        return {
            "codebase_version": fmt.CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self.episodes),
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": fmt.CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": fmt.DATA_PATH,
            "video_path": fmt.VIDEO_PATH if self.video else None,
            "features": {
                fmt.IMAGE_KEY: image,
                fmt.STATE_KEY: {
                    "dtype": "float32",
                    "shape": [len(self.state_names)],
                    "names": list(self.state_names),
                },
                fmt.ACTION_KEY: {
                    "dtype": "float32",
                    "shape": [len(self.action_names)],
                    "names": list(self.action_names),
                },
                "timestamp": scalar("float32"),
                "frame_index": scalar("int64"),
                "episode_index": scalar("int64"),
                "index": scalar("int64"),
                "task_index": scalar("int64"),
                **{
                    key: {"dtype": dtype, "shape": [size], "names": None}
                    for key, (size, dtype) in self.annotation_spec.items()
                },
            },
        }

    def abort(self) -> None:
        """Close an open video file without writing meta/ (the dataset is not usable)."""
        if self._container is not None:
            self._container.close()
            self._container = None


def _fixed_list(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), dtype)
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _png_column(images: np.ndarray) -> pa.Array:
    from PIL import Image

    encoded = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        encoded.append({"bytes": buf.getvalue(), "path": None})
    return pa.array(encoded, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes a frame indexed by `task` with a `task_index` column."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table(
        {"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())}
    )
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace a non-empty `out_dir` unless `overwrite` (the write itself is atomic)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"out: {out_dir} exists and is not empty (pass overwrite=True / --overwrite)")
