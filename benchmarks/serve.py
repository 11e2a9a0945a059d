"""Serving: latency and throughput of `kivla serve` on loopback, batching off and on, beside the
in-process `PolicyBundle.act` latency of the same policy.

The server runs as its own process (`python -m kivla serve`, one torch thread); the clients are
openpi's `WebsocketClientPolicy`, one thread each, in this process. Every client sends a fixed
number of requests back to back (bounded in count, and each setting stops after TIME_CAP_S);
latency is measured at the client, throughput is requests / wall time of the setting.
Two policies: the default tiny architecture of the eval benchmark (4.6M parameters, 64 px, H=50)
and the 58K-parameter test bundle (32 px, H=8), whose batch-1 call is mostly per-op overhead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import write_section

CLIENTS = (1, 4, 16)
REQUESTS = {1: 150, 4: 20, 16: 8}  # per client
IN_PROCESS_CALLS = 150
TIME_CAP_S = 60.0
PROMPT = "put the red circle on the blue square"
REPO = Path(__file__).resolve().parent.parent


def _obs(size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.random(5).astype(np.float32),
        "prompt": PROMPT,
    }


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "n": len(ms)}


def in_process_latency(bundle, size: int, batch_size: int = 1, calls: int = IN_PROCESS_CALLS) -> dict:
    obs = _obs(size, 0)
    batch = {
        "image": np.repeat(obs["observation/image"][None], batch_size, axis=0),
        "state": np.repeat(obs["observation/state"][None], batch_size, axis=0),
        "instruction": [PROMPT] * batch_size,
    }
    bundle.act(batch)  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        bundle.act(batch)
        times.append((time.perf_counter() - start) * 1e3)
    return _percentiles(times)


class Server:
    """`python -m kivla serve` on 127.0.0.1, a free port, one torch thread."""

    def __init__(self, policy_dir: Path, max_batch: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "kivla", "serve", "--policy", str(policy_dir), "--port", "0",
                "--host", "127.0.0.1", "--threads", "1", "--max-batch", str(max_batch)]  # fmt: skip
        self.process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if match := re.search(r"ws://127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
                threading.Thread(target=self.process.stderr.read, daemon=True).start()  # drain
                return
            if not line and self.process.poll() is not None:
                break
        self.process.kill()
        raise RuntimeError("kivla serve did not start")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def served(port: int, clients: int, size: int) -> dict[str, float]:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    policies = [WebsocketClientPolicy("127.0.0.1", port) for _ in range(clients)]
    for i, p in enumerate(policies):
        p.infer(_obs(size, i))  # warm-up, one request each
    latencies: list[float] = []
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)
    stop_at = [0.0]

    def drive(i: int) -> None:
        obs = _obs(size, i)
        barrier.wait()
        mine = []
        for _ in range(REQUESTS[clients]):
            if time.perf_counter() > stop_at[0]:
                break
            start = time.perf_counter()
            policies[i].infer(obs)
            mine.append((time.perf_counter() - start) * 1e3)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop_at[0] = start + TIME_CAP_S
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {**_percentiles(latencies), "throughput": len(latencies) / wall}


def measure(name: str, bundle) -> dict:
    size = bundle.builder.image_size
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir = bundle.save(Path(tmp) / "policy")
        result = {
            "name": name,
            "in_process": in_process_latency(bundle, size),
            "in_process_16": in_process_latency(bundle, size, batch_size=16, calls=10),
            "served": {},
        }
        for batching, max_batch in (("off", 1), ("on", 16)):
            server = Server(policy_dir, max_batch)
            try:
                for clients in CLIENTS:
                    result["served"][(batching, clients)] = served(server.port, clients, size)
                    print(name, batching, clients, result["served"][(batching, clients)], flush=True)
            finally:
                server.close()
    return result


def _section(r: dict) -> list[str]:
    ip, s = r["in_process"], r["served"]
    cost16 = r["in_process_16"]["p50"] / ip["p50"]
    lines = [
        f"### {r['name']}",
        "",
        f"In-process `act`, batch 1: p50 {ip['p50']:.1f} ms, p99 {ip['p99']:.1f} ms ({ip['n']} calls); "
        f"batch 16: p50 {r['in_process_16']['p50']:.1f} ms, the cost of {cost16:.1f} batch-1 calls, "
        f"so batching can gain at most {16 / cost16:.1f}× here.",
        "",
        "| clients | batching | requests | p50 (ms) | p99 (ms) | throughput (req/s) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for (batching, clients), m in s.items():
        lines.append(
            f"| {clients} | {batching} | {m['n']} | {m['p50']:.1f} | {m['p99']:.1f} | {m['throughput']:.1f} |"
        )
    gain = s[("on", 16)]["throughput"] / s[("off", 16)]["throughput"]
    overhead = s[("on", 1)]["p99"] - ip["p99"]
    overhead_p50 = s[("on", 1)]["p50"] - ip["p50"]
    lines += [
        "",
        f"16 clients, batching on / off throughput: **{gain:.2f}×** (target ≥ 3×: "
        f"{'met' if gain >= 3 else 'not met'}). 1 client, served − in process (batching on): p99 "
        f"**{overhead:+.1f} ms** (target ≤ 2 ms: {'met' if overhead <= 2 else 'not met'}), p50 "
        f"{overhead_p50:+.1f} ms.",
        "",
    ]
    return lines


def main() -> None:
    from benchmarks.eval import tiny_bundle
    from kivla.model.testing import tiny_world_bundle

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = [
            measure("default tiny policy (4.6M parameters, 64 px, H=50)", tiny_bundle()),
            measure("test policy (58K parameters, 32 px, H=8)", tiny_world_bundle()),
        ]
    finally:
        torch.set_num_threads(threads)
    lines = [
        "## Serving: `kivla serve` latency and throughput (`benchmarks/serve.py`)",
        "",
        "Loopback only. The server is its own process with one torch thread (`--threads 1`, default "
        "batch window 2 ms); clients are openpi's `WebsocketClientPolicy`, one thread each, sending "
        "requests back to back (one 64×64 or 32×32 image, a state, the prompt). Latency is per "
        "request at the client; throughput is requests over the setting's wall time. Batching off "
        "is `--max-batch 1` (openpi's one request at a time), on is `--max-batch 16`.",
        "",
    ]
    for r in results:
        lines += _section(r)
    lines += [
        "Batching can only win what a batch-16 call saves over 16 batch-1 calls: on one CPU thread "
        "the default policy is mostly compute, the test policy mostly per-op overhead. The p99 of a "
        "setting is its slowest one or two requests, so on a shared machine it moves with other "
        "processes' load by more than the server's own overhead; the p50 difference is the steadier "
        "measure of that overhead (msgpack, websocket, one thread hop).",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("serve", body)


if __name__ == "__main__":
    main()
