"""`kivla serve` as a user runs it: a run directory, a process, openpi's client, then Ctrl-C
(or SIGTERM, as a process manager stops it)."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from kivla.cli import main
from kivla.model.testing import save_tiny_world_bundle
from kivla.serve.conftest import make_obs

REPO = Path(__file__).resolve().parents[2]


def _wait_for_port(process: subprocess.Popen, timeout: float = 60) -> int:
    deadline, lines = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if match := re.search(r"ws://127\.0\.0\.1:(\d+)", line):
            return int(match.group(1))
    process.kill()
    raise AssertionError("kivla serve did not report its port:\n" + "".join(lines))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_kivla_serve_process(tmp_path, stop):
    save_tiny_world_bundle(tmp_path / "run" / "checkpoints" / "step_00000002")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "KIVLA_API_KEY": "from-env"}  # fmt: skip
    argv = [sys.executable, "-m", "kivla", "serve", "--policy", str(tmp_path / "run"), "--port", "0",
            "--max-batch", "4", "--key", "prompt=task"]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = _wait_for_port(process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
        client = WebsocketClientPolicy("127.0.0.1", port, api_key="from-env")
        meta = client.get_server_metadata()
        assert meta["keys"]["prompt"] == "task" and meta["max_batch"] == 4
        obs = make_obs()
        obs["task"] = obs.pop("prompt")
        actions = client.infer(obs)["actions"]
        assert actions.shape == (8, 4) and np.isfinite(actions).all()
    finally:
        process.send_signal(stop)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            log = process.stderr.read()[-4000:]
            raise AssertionError(f"kivla serve did not stop on {stop.name}:\n{log}") from None
    assert code == 0


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert main(["serve", "--policy", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "policy.json" in capsys.readouterr().err
    save_tiny_world_bundle(tmp_path / "bundle")
    assert main(["serve", "--policy", str(tmp_path / "bundle"), "--key", "camera=x"]) == 2
    assert "--key: expected NAME=KEY" in capsys.readouterr().err
    assert main(["serve", "--policy", str(tmp_path / "bundle"), "--max-batch", "0"]) == 2
    assert "max_batch" in capsys.readouterr().err
    assert main(["serve", "--policy", str(tmp_path / "bundle"), "--keypoint-peak", "1"]) == 2
    assert "keypoint_peak: the policy has no keypoints" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "openpi" in capsys.readouterr().out
