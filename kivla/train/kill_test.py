"""A training process killed (SIGKILL) in the middle of writing a checkpoint loses only that one.

A real subprocess trains with `kivla train`; while it writes its second checkpoint (after the
weights file, before the rest) the test kills it. The first checkpoint must still load as a
policy, and `kivla train --resume` must continue from it to the same weights as a run that was
never interrupted.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from kivla.cli import main
from kivla.data.world_dataset import generate_dataset
from kivla.model.bundle import PolicyBundle
from kivla.train.checkpoint import latest_checkpoint, list_checkpoints

# The child: `kivla train`, with the checkpoint's weights writer stopping inside checkpoint 4.
CHILD = """
import sys, time
from pathlib import Path
import kivla.train.checkpoint as checkpoint
from kivla.cli import main

write = checkpoint.save_file
def stall_in_step_4(tensors, path, *args, **kwargs):
    write(tensors, path, *args, **kwargs)
    if "step_00000004" in str(path):
        Path(sys.argv[1]).write_text(str(path))  # tell the test: half a checkpoint is on disk
        time.sleep(600)
checkpoint.save_file = stall_in_step_4
sys.exit(main(sys.argv[2:]))
"""


def train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--recipe", "stopgrad", "--size", "test",
            "--horizon", "8", "--steps", "4", "--batch-size", "4", "--save-every", "2", "--keep-last", "5",
            "--warmup-steps", "1", "--log-every", "1", "--seed", "3", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "data"
    return generate_dataset(root, episodes=4, image_size=32, seed=5, video=False, progress=False)


def test_sigkill_while_checkpointing_keeps_the_previous_one_and_resume_continues(dataset, tmp_path):
    run, marker = tmp_path / "killed", tmp_path / "writing"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), *train_args(dataset, run)], env=env)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, "the training process exited before its second checkpoint"
            assert time.monotonic() < deadline, "no checkpoint write within 300 s"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    # The half-written checkpoint is a hidden temp directory; the previous one is whole.
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000002"]
    assert any(p.name.startswith(".tmp-step_00000004") for p in (run / "checkpoints").iterdir())
    assert PolicyBundle.load(latest_checkpoint(run / "checkpoints")).recipe == "stopgrad"

    assert main(train_args(dataset, run, "--resume")) == 0
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000002", "step_00000004"]
    assert main(train_args(dataset, tmp_path / "whole")) == 0
    resumed = load_file(run / "checkpoints" / "step_00000004" / "model.safetensors")
    whole = load_file(tmp_path / "whole" / "checkpoints" / "step_00000004" / "model.safetensors")
    assert resumed.keys() == whole.keys() and all((resumed[k] == whole[k]).all() for k in whole)
