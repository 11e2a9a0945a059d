"""`PolicyServer`: a `PolicyBundle` behind openpi's websocket protocol, with dynamic batching.

The protocol (openpi's `WebsocketPolicyServer`, which its `WebsocketClientPolicy` drives):
  connect (optionally with `Authorization: Api-Key <key>`) -> the server sends its metadata map;
  then each binary client frame is one observation map (see kivla.serve.observation) and each
  reply one map {"actions": float32 [H, D] unnormalized, "server_timing": {"infer_ms",
  "prev_total_ms"}, "policy_timing": {"infer_ms", "queue_ms", "batch_size"}}.
  A refused frame gets a text frame naming the field and what was expected, then a close
  (1007, or 1011 when the policy itself failed); other connections are not affected.
  `GET /healthz` answers 200 OK (no key needed); frames over `max_frame_bytes` are refused by
  the websocket layer (close 1009) before they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import ipaddress
import itertools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import CloseCode

from kivla.serve import msgpack_numpy
from kivla.serve.batching import Batcher, Result
from kivla.serve.observation import BadRequest, ObservationKeys, Request, Spec, parse_request, unknown_words

log = logging.getLogger(__name__)
API_KEY_ENV = "KIVLA_API_KEY"
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port (tests)
    api_key: str | None = None  # None: no authentication
    max_batch: int = 16  # observations sampled together; 1 turns batching off
    batch_window_ms: float = 2.0  # how long an open batch waits for other connected clients
    max_frame_bytes: int = 4 * 2**20
    max_observations: int = 256  # in one batched frame (a bound on one request's policy time)
    num_steps: int = 10  # Euler steps of flow sampling
    seed: int = 0  # the server's noise generator (requests without noise or noise_seed)
    fps: int = 10  # control rate the policy was trained at (the built-in world's)
    keys: ObservationKeys = field(default_factory=ObservationKeys)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_frame_bytes", "max_observations", "num_steps", "fps"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"ServeConfig.port: expected 0..65535, got {self.port}")
        if self.batch_window_ms < 0:
            raise ValueError(f"ServeConfig.batch_window_ms: expected >= 0, got {self.batch_window_ms}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("ServeConfig.api_key: expected a non-empty key or None")


def bind_warning(host: str, api_key: str | None) -> str | None:
    """The warning for a server that anyone on the network could drive, else None."""
    if api_key is None and not is_loopback(host):
        return f"serving on {host} without an API key: anyone who can reach it can drive it"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PolicyServer:
    """Serves one bundle. `run()` blocks; `running_server(...)` runs one in a thread (tests, bench)."""

    def __init__(self, bundle: Any, config: ServeConfig | None = None) -> None:
        import torch

        self.bundle, self.config = bundle, config or ServeConfig()
        b = bundle.builder
        self.spec = Spec(b.image_size, b.state_dim, b.horizon, b.action_dim, self.config.keys)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.connections = 0
        self.port: int | None = None

    def metadata(self) -> dict[str, Any]:
        """What a client needs: the shapes, the key names, the recipe, the versions."""
        import kivla

        s, c = self.spec, self.config
        return {
            "server": "kivla",
            "kivla_version": kivla.__version__,
            "recipe": self.bundle.recipe,
            "horizon": s.horizon,
            "action_dim": s.action_dim,
            "state_dim": s.state_dim,
            "image_size": s.image_size,
            "fps": c.fps,
            "num_steps": c.num_steps,
            "max_batch": c.max_batch,
            "max_frame_bytes": c.max_frame_bytes,
            "max_observations": c.max_observations,
            "keys": {"image": s.keys.image, "state": s.keys.state, "prompt": s.keys.prompt},
            "actions": "float32 [H, D] unnormalized ([B, H, D] for a batched observation)",
        }

    # -- the policy call (worker thread) -----------------------------------------------------------
    def sample(self, requests: list[Request]) -> list[np.ndarray]:
        """One `act` call for a list of requests; each request's noise is its own."""
        import torch

        shape = (self.spec.horizon, self.spec.action_dim)
        noise = []
        for r in requests:
            if r.noise is not None:
                noise.append(torch.from_numpy(r.noise))
            else:
                gen = torch.Generator().manual_seed(r.noise_seed) if r.noise_seed is not None else None
                noise.append(torch.randn((r.size, *shape), generator=gen or self.generator))
        obs = {
            "image": np.concatenate([r.images for r in requests]),
            "state": np.concatenate([r.states for r in requests]),
            "instruction": [p for r in requests for p in r.prompts],
        }
        actions = self.bundle.act(obs, num_steps=self.config.num_steps, noise=torch.cat(noise))
        bounds = np.cumsum([0] + [r.size for r in requests])
        return [actions[a:b].astype(np.float32) for a, b in itertools.pairwise(bounds)]

    # -- websocket side --------------------------------------------------------------------------
    def parse(self, frame: bytes | str) -> Request:
        if isinstance(frame, str):
            raise BadRequest("frame: expected a binary msgpack frame (openpi's msgpack_numpy), got text")
        try:
            obs = msgpack_numpy.unpackb(frame)
        except Exception as err:  # msgpack raises several types on garbage; none may escape
            raise BadRequest(f"frame: not a msgpack observation map ({type(err).__name__}: {err})") from err
        request = parse_request(obs, self.spec)
        if request.size > self.config.max_observations:
            raise BadRequest(
                f"{self.spec.keys.image}: expected at most {self.config.max_observations} observations "
                f"in one frame, got {request.size}"
            )
        for prompt in request.prompts:
            unknown = unknown_words(self.bundle.builder.text, prompt)
            if unknown:
                raise BadRequest(
                    f"{self.spec.keys.prompt}: words outside the policy's vocabulary: {unknown} "
                    f"(expected a str of known words)"
                )
        return request

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        """HTTP before the handshake: /healthz, then the API key."""
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.config.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.config.api_key}".encode()):
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong Api-Key\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            await ws.send(msgpack_numpy.packb(self.metadata()))
            prev_total_ms = None
            while True:
                try:
                    frame = await ws.recv()
                except websockets.ConnectionClosed:
                    return
                start = time.perf_counter()
                try:
                    request = self.parse(frame)
                    result = await self.batcher.submit(request)
                except BadRequest as err:
                    await _refuse(ws, str(err), CloseCode.INVALID_DATA)
                    return
                except Exception as err:
                    log.exception("policy failed on a request")
                    await _refuse(ws, f"policy: {type(err).__name__}: {err}", CloseCode.INTERNAL_ERROR)
                    return
                reply = _reply(request, result, (time.perf_counter() - start) * 1e3, prev_total_ms)
                try:
                    await ws.send(msgpack_numpy.packb(reply))
                except websockets.ConnectionClosed:
                    return
                prev_total_ms = (time.perf_counter() - start) * 1e3
        finally:
            self.connections -= 1

    async def serve(self, ready: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        c = self.config
        if (warning := bind_warning(c.host, c.api_key)) is not None:
            log.warning(warning)
        self.batcher = Batcher(
            self.sample, c.max_batch, c.batch_window_ms / 1e3, clients=lambda: self.connections
        )
        async with serve(
            self.handler,
            c.host,
            c.port,
            compression=None,
            max_size=c.max_frame_bytes,
            process_request=self.process_request,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info("kivla serve: ws://%s:%d (healthz: http://%s:%d/healthz)", c.host, self.port, c.host,
                     self.port)  # fmt: skip
            if ready is not None:
                ready.set()
            try:
                await (stop.wait() if stop is not None else server.serve_forever())
            finally:
                server.close()
                await self.batcher.close()

    def run(self) -> None:
        """Serve until SIGINT (Ctrl-C) or SIGTERM, then close the connections and the batcher.

        The signals set a stop event on the loop rather than interrupting it (asyncio.run's own
        Ctrl-C handling cancels the main task, and a cancellation that lands inside a library's
        timeout block can be swallowed, leaving the server running)."""

        async def main() -> None:
            stop, loop = asyncio.Event(), asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, stop.set)  # not on Windows or off the main thread
            await self.serve(stop=stop)

        asyncio.run(main())


def _reply(request: Request, result: Result, total_ms: float, prev_total_ms: float | None) -> dict:
    actions = result.actions if request.batched else result.actions[0]
    server_timing = {"infer_ms": total_ms}
    if prev_total_ms is not None:
        server_timing["prev_total_ms"] = prev_total_ms
    return {
        "actions": np.ascontiguousarray(actions, dtype=np.float32),
        "server_timing": server_timing,
        "policy_timing": {
            "infer_ms": result.infer_ms,
            "queue_ms": result.queue_ms,
            "batch_size": result.batch_size,
        },
    }


async def _refuse(ws: ServerConnection, message: str, code: CloseCode) -> None:
    """openpi's convention: the error as a text frame, then close."""
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(message)
        await ws.close(code=code, reason="request refused: see the previous text frame")


@contextlib.contextmanager
def running_server(bundle: Any, config: ServeConfig | None = None) -> Iterator[PolicyServer]:
    """A server on a background thread for the duration of the block (`.port` is the bound port)."""
    server = PolicyServer(bundle, config or ServeConfig(port=0))
    ready, loop_box = threading.Event(), {}

    def main() -> None:
        async def go() -> None:
            loop_box["loop"], loop_box["stop"] = asyncio.get_running_loop(), asyncio.Event()
            await server.serve(ready, loop_box["stop"])

        try:
            asyncio.run(go())
        except BaseException as err:
            loop_box["error"] = err
            ready.set()

    thread = threading.Thread(target=main, name="kivla-serve", daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in loop_box or server.port is None:
        raise RuntimeError(f"kivla serve did not start: {loop_box.get('error')!r}")
    try:
        yield server
    finally:
        loop_box["loop"].call_soon_threadsafe(loop_box["stop"].set)
        thread.join(30)
