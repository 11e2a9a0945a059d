"""The server against openpi's real client: equal actions, batching, bad input, the API key."""

import re
import threading
import urllib.request

import msgpack
import numpy as np
import pytest
import websockets
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from kivla.serve import msgpack_numpy
from kivla.serve.conftest import PROMPT, in_process, make_obs
from kivla.serve.server import ServeConfig, bind_warning, is_loopback, running_server


@pytest.fixture(scope="module")
def server(bundle):
    with running_server(bundle, ServeConfig(port=0, max_batch=16, batch_window_ms=20.0)) as srv:
        yield srv


def test_openpi_client_gets_the_in_process_actions(bundle, server):
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    meta = client.get_server_metadata()
    assert meta["horizon"] == 8 and meta["action_dim"] == 4 and meta["state_dim"] == 5
    assert meta["image_size"] == 32 and meta["fps"] == 10 and meta["recipe"] == "ki" and meta["kivla_version"]
    for seed in (0, 7):
        obs = make_obs(seed)
        reply = client.infer({**obs, "noise_seed": seed})
        assert reply["actions"].shape == (8, 4) and reply["actions"].dtype == np.float32
        np.testing.assert_array_equal(reply["actions"], in_process(bundle, obs, seed))
    assert {"infer_ms", "prev_total_ms"} <= set(reply["server_timing"])
    assert {"infer_ms", "queue_ms", "batch_size"} <= set(reply["policy_timing"])


def test_batched_observation(bundle, server):
    import torch

    client = WebsocketClientPolicy(f"ws://127.0.0.1:{server.port}")
    obs = [make_obs(i) for i in range(3)]
    frame = {
        "observation/image": np.stack([o["observation/image"] for o in obs]),
        "observation/state": np.stack([o["observation/state"] for o in obs]),
        "prompt": [PROMPT, "reach the red circle", PROMPT],
        "noise_seed": 11,
    }
    reply = client.infer(frame)
    expected = bundle.act(
        {
            "image": frame["observation/image"],
            "state": frame["observation/state"],
            "instruction": frame["prompt"],
        },
        generator=torch.Generator().manual_seed(11),
    )
    assert reply["actions"].shape == (3, 8, 4)
    np.testing.assert_allclose(reply["actions"], expected, atol=1e-6)


def test_concurrent_clients_are_batched_and_each_gets_its_own(bundle, server):
    n = 6
    clients = [WebsocketClientPolicy("127.0.0.1", server.port) for _ in range(n)]
    barrier, replies = threading.Barrier(n), {}

    def drive(i: int) -> None:
        barrier.wait()
        for round_ in range(3):
            obs = make_obs(100 + i, prompt=PROMPT if i % 2 else "reach the red circle")
            replies[(i, round_)] = (obs, clients[i].infer({**obs, "noise_seed": i}))

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(replies) == 3 * n
    assert max(r["policy_timing"]["batch_size"] for _, r in replies.values()) > 1
    for (i, _), (obs, reply) in replies.items():
        np.testing.assert_allclose(reply["actions"], in_process(bundle, obs, i), atol=1e-5)


def test_healthz(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
        assert response.status == 200 and response.read() == b"OK\n"


def _packed(change: dict) -> bytes:
    obs = make_obs()
    for key, value in change.items():
        if value is None:
            del obs[key]
        else:
            obs[key] = value
    return msgpack_numpy.packb(obs)


BAD_FRAMES = {
    "missing key": (
        _packed({"observation/state": None}),
        r"observation/state: missing \(expected float \[5\]",
    ),
    "wrong shape": (
        _packed({"observation/image": np.zeros((64, 64, 3), np.uint8)}),
        r"expected uint8 \[32, 32, 3\]",
    ),
    "wrong dtype": (
        _packed({"observation/image": np.zeros((32, 32, 3), np.float32)}),
        "expected dtype uint8",
    ),
    "NaN": (
        _packed({"observation/state": np.full(5, np.nan, np.float32)}),
        "observation/state: contains NaN",
    ),
    "unknown prompt word": (
        _packed({"prompt": "put the zorblax on the blue square"}),
        r"prompt: .*\['zorblax'\]",
    ),
    "not msgpack": (b"\xc1\xc1 this is not msgpack", "frame: not a msgpack observation map"),
    "text frame": ("observation/image", "frame: expected a binary msgpack frame"),
    "not a map": (msgpack.packb([1, 2, 3]), "frame: expected a map"),
    "object dtype": (
        msgpack.packb(
            {"observation/image": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}}
        ),
        "refused",
    ),
    "short buffer": (
        msgpack.packb(
            {
                "observation/image": {
                    b"__ndarray__": True,
                    b"data": b"\0",
                    b"dtype": "|u1",
                    b"shape": [32, 32, 3],
                }
            }
        ),
        "do not hold",
    ),
    "bad noise": (_packed({"noise": np.zeros((2, 2), np.float32)}), r"noise: expected float32 \[8, 4\]"),
}


def test_bad_input_is_refused_and_others_keep_being_served(bundle, server):
    good = WebsocketClientPolicy("127.0.0.1", server.port)  # one long-lived connection throughout
    obs = make_obs(3)
    for name, (frame, match) in BAD_FRAMES.items():
        with connect(f"ws://127.0.0.1:{server.port}", max_size=None) as ws:
            ws.recv(10)  # metadata
            ws.send(frame)
            error = ws.recv(10)
            assert isinstance(error, str), name
            assert re.search(match, error), (name, error)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(10)
            assert closed.value.rcvd.code == 1007, name
        reply = good.infer({**obs, "noise_seed": 1})  # the server is still up
        np.testing.assert_array_equal(reply["actions"], in_process(bundle, obs, 1))
        fresh = WebsocketClientPolicy("127.0.0.1", server.port)  # and takes new clients
        assert fresh.infer({**obs, "noise_seed": 1})["actions"].shape == (8, 4)


def test_oversized_frame_is_refused(bundle):
    with running_server(bundle, ServeConfig(port=0, max_frame_bytes=8192)) as srv:
        with connect(f"ws://127.0.0.1:{srv.port}", max_size=None) as ws:
            ws.recv(10)
            ws.send(_packed({"observation/image": np.zeros((64, 64, 3), np.uint8)}))  # 12 KiB
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(10)
            assert closed.value.rcvd.code == 1009 and "8192" in closed.value.rcvd.reason
        client = WebsocketClientPolicy("127.0.0.1", srv.port)
        assert client.infer(make_obs())["actions"].shape == (8, 4)


def test_too_many_observations_in_one_frame(bundle):
    with running_server(bundle, ServeConfig(port=0, max_observations=2)) as srv:
        client = WebsocketClientPolicy("127.0.0.1", srv.port)
        frame = {
            "observation/image": np.zeros((3, 32, 32, 3), np.uint8),
            "observation/state": np.zeros((3, 5)),
            "prompt": ["reach the red circle"] * 3,
        }
        with pytest.raises(RuntimeError, match="expected at most 2 observations in one frame, got 3"):
            client.infer(frame)


def test_api_key(bundle):
    with running_server(bundle, ServeConfig(port=0, api_key="s3cret")) as srv:
        for key in (None, "wrong"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                WebsocketClientPolicy("127.0.0.1", srv.port, api_key=key)
            assert refused.value.response.status_code == 401
        client = WebsocketClientPolicy("127.0.0.1", srv.port, api_key="s3cret")
        assert client.infer(make_obs())["actions"].shape == (8, 4)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=10) as response:
            assert response.status == 200  # health checks need no key


def test_non_loopback_bind_without_key_warns():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("robot.local")
    assert "without an API key" in bind_warning("0.0.0.0", None)
    assert bind_warning("0.0.0.0", "key") is None and bind_warning("127.0.0.1", None) is None


def test_config_errors():
    with pytest.raises(ValueError, match=r"ServeConfig\.max_batch"):
        ServeConfig(max_batch=0)
    with pytest.raises(ValueError, match=r"ServeConfig\.port"):
        ServeConfig(port=70000)
    with pytest.raises(ValueError, match=r"ServeConfig\.api_key"):
        ServeConfig(api_key="")
