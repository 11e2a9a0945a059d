"""Clients of `kivla serve` (and of any openpi policy server): `PolicyClient` and `ServerPolicy`.

`PolicyClient` speaks the same protocol as openpi's `WebsocketClientPolicy` (metadata first,
msgpack frames, `Authorization: Api-Key`), for users without openpi-client. `ServerPolicy` is
the `kivla.eval` Policy interface over a server: `kivla eval --server ws://HOST:PORT`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from websockets.sync.client import connect

from kivla.serve import msgpack_numpy
from kivla.serve.observation import NOISE_KEY


class ServerError(RuntimeError):
    """The server refused a frame (its text frame is the message) or closed the connection."""


class PolicyClient:
    """`infer(obs) -> {"actions", "server_timing", "policy_timing"}`; `.metadata` from the server."""

    def __init__(self, url: str = "ws://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30.0):
        if not url.startswith(("ws://", "wss://")):
            url = f"ws://{url}"
        self.url = url
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._stack = contextlib.ExitStack()  # a connection held open across calls
        self._ws = self._stack.enter_context(
            connect(url, compression=None, max_size=None, additional_headers=headers, open_timeout=timeout)
        )
        self._timeout = timeout
        self.metadata: dict[str, Any] = msgpack_numpy.unpackb(self._ws.recv(timeout))

    def get_server_metadata(self) -> dict[str, Any]:  # openpi's name
        return self.metadata

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        import websockets

        try:
            self._ws.send(msgpack_numpy.packb(obs))
            reply = self._ws.recv(self._timeout)
        except websockets.ConnectionClosed as err:
            raise ServerError(f"{self.url}: connection closed ({err})") from err
        if isinstance(reply, str):
            self.close()
            raise ServerError(reply)
        return msgpack_numpy.unpackb(reply)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerPolicy:
    """A served policy as a `kivla.eval` Policy: one batched frame per `act` call.

    The flow noise is drawn here, exactly as `BundlePolicy(bundle, seed)` draws it in process
    (one torch generator, [B, H, D] per call), and sent with the frame, so an evaluation through
    the server samples the same chunks as one in process with the same seed.
    """

    def __init__(self, url: str, seed: int = 0, api_key: str | None = None) -> None:
        import torch

        self.client = PolicyClient(url, api_key=api_key)
        meta = self.client.metadata
        for key in ("horizon", "action_dim", "image_size", "keys"):
            if key not in meta:
                raise ValueError(f"{url}: server metadata has no {key!r} (is it a kivla server?)")
        self.horizon, self.action_dim, self.keys = meta["horizon"], meta["action_dim"], meta["keys"]
        self.image_size = meta["image_size"]
        self.name = meta.get("recipe") or "server"
        self.generator = torch.Generator().manual_seed(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        import torch

        b = len(obs["instruction"])
        noise = torch.randn((b, self.horizon, self.action_dim), generator=self.generator)
        frame = {
            self.keys["image"]: np.asarray(obs["image"], dtype=np.uint8),
            self.keys["state"]: np.asarray(obs["state"], dtype=np.float32),
            self.keys["prompt"]: [str(p) for p in obs["instruction"]],
            NOISE_KEY: noise.numpy(),
        }
        return np.asarray(self.client.infer(frame)["actions"], dtype=np.float32)

    def close(self) -> None:
        self.client.close()
