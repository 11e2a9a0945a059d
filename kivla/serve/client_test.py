"""kivla's own client, and the closed-loop evaluation through a server."""

import json

import numpy as np
import pytest

from kivla.cli import main
from kivla.eval.baselines import BundlePolicy
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.serve.client import PolicyClient, ServerError, ServerPolicy
from kivla.serve.conftest import in_process, make_obs
from kivla.serve.server import ServeConfig, running_server

EVAL = EvalConfig(episodes=4, splits=("train",), families=("reach", "push"), num_envs=2, max_steps=30,
                  image_size=32, videos=0, seed=5)  # fmt: skip


@pytest.fixture(scope="module")
def server(bundle):
    with running_server(bundle, ServeConfig(port=0, api_key="k")) as srv:
        yield srv


def test_policy_client(bundle, server):
    with PolicyClient(f"ws://127.0.0.1:{server.port}", api_key="k") as client:
        assert client.get_server_metadata()["horizon"] == 8
        obs = make_obs(2)
        np.testing.assert_array_equal(
            client.infer({**obs, "noise_seed": 4})["actions"], in_process(bundle, obs, 4)
        )
        with pytest.raises(ServerError, match="observation/state: missing"):
            client.infer({"observation/image": obs["observation/image"], "prompt": "reach"})


class Recording:
    """A policy that keeps every chunk it returned."""

    def __init__(self, policy) -> None:
        self.policy, self.chunks = policy, []

    def act(self, obs):
        self.chunks.append(self.policy.act(obs))
        return self.chunks[-1]


def test_closed_loop_through_the_server_equals_in_process(bundle, server):
    local = Recording(BundlePolicy(bundle, seed=3))
    local_result = evaluate(local, EVAL)
    remote = Recording(ServerPolicy(f"127.0.0.1:{server.port}", seed=3, api_key="k"))
    try:
        remote_result = evaluate(remote, EVAL)
    finally:
        remote.policy.close()
    assert remote_result.summary() == local_result.summary()
    assert remote_result.episodes == local_result.episodes  # success, follow, engaged object, length
    assert len(remote.chunks) == len(local.chunks) > 2
    for a, b in zip(remote.chunks, local.chunks, strict=True):
        np.testing.assert_array_equal(a, b)


def test_eval_cli_with_server(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KIVLA_API_KEY", "k")
    url = f"ws://127.0.0.1:{server.port}"
    argv = ["eval", "--server", url, "--episodes", "2", "--split", "train", "--num-envs", "2",
            "--max-steps", "20", "--videos", "0", "--out", str(tmp_path), "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policy"] == url
    assert report["summary"]["train"]["episodes"] == 2 and (tmp_path / "eval.json").is_file()
