"""Policy speed: training step time per recipe (ki vs naive) and batch-1 sampling latency with and
without the prefix KV cache, measured in the same run on the default tiny config.

Measurements are interleaved (naive, ki, naive, ki, ...) so that load from other processes on a
shared machine hits both sides alike. Each measurement records wall time and the process's CPU time;
with one thread, CPU time leaves out the time other processes hold the core, so ratios are taken
from CPU-time medians (wall-time medians are shown beside them).
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from benchmarks.report import write_section
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config
from kivla.model.synthetic import synthetic_batch

BATCH = 32
TRAIN_REPEATS = 7
SAMPLE_BLOCKS, SAMPLE_BLOCK_SIZE = 5, 5
PROMPT_LEN, FAST_LEN = 32, 40  # DESIGN.md §7: 64 image + 32 text + ~40 FAST tokens


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _train_step(policy: KIPolicy, optimizer: torch.optim.Optimizer, batch, seed: int) -> None:
    loss = policy(batch, generator=torch.Generator().manual_seed(seed)).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _medians(times: list[tuple[float, float]]) -> dict[str, float]:
    return {"wall": statistics.median(t[0] for t in times), "cpu": statistics.median(t[1] for t in times)}


def measure_training(recipes: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Median seconds (wall, cpu) a training step (forward, backward, AdamW) per named setting."""
    setups = {}
    for name, overrides in recipes.items():
        torch.manual_seed(0)
        config = recipe_config(overrides.pop("recipe"), **overrides)
        policy = KIPolicy(config).train()
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
        batch = synthetic_batch(config, BATCH, prompt_len=PROMPT_LEN, fast_len=FAST_LEN)
        _train_step(policy, optimizer, batch, seed=0)  # warm-up
        setups[name] = (policy, optimizer, batch, [])
    for repeat in range(TRAIN_REPEATS):
        for policy, optimizer, batch, times in setups.values():
            times.append(_timed(lambda: _train_step(policy, optimizer, batch, seed=repeat + 1)))  # noqa: B023
    return {name: _medians(times) for name, (_, _, _, times) in setups.items()}


def measure_sampling() -> dict[str, dict[str, float]]:
    """Median seconds (wall, cpu) for one batch-1 chunk (10 Euler steps), cached and uncached.

    Blocks of consecutive calls per path, alternating (as a policy server calls it back to back),
    the first call of each block discarded as warm-up.
    """
    torch.manual_seed(0)
    config = recipe_config("ki")
    policy = KIPolicy(config).eval()
    obs = synthetic_batch(config, 1, prompt_len=PROMPT_LEN, fast_len=FAST_LEN)
    noise = torch.randn(1, config.expert.horizon, config.expert.action_dim)
    times = {"cached": [], "uncached": []}
    for _ in range(SAMPLE_BLOCKS):
        for name in times:
            use_cache = name == "cached"
            for call in range(SAMPLE_BLOCK_SIZE + 1):
                spent = _timed(lambda: policy.sample_actions(obs, noise=noise, use_cache=use_cache))  # noqa: B023
                if call:
                    times[name].append(spent)
    cached = policy.sample_actions(obs, noise=noise)
    uncached = policy.sample_actions(obs, noise=noise, use_cache=False)
    assert torch.allclose(cached, uncached, atol=1e-5), "cached and uncached sampling disagree"
    return {name: _medians(t) for name, t in times.items()}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("KIVLA_BENCH_THREADS", "1")))
    config = recipe_config("ki")
    params = KIPolicy(config).num_parameters()
    train = measure_training(
        {
            "naive": {"recipe": "naive"},
            "ki": {"recipe": "ki"},
            "stopgrad": {"recipe": "stopgrad"},
            "joint_fast": {"recipe": "joint_fast"},
            "ki, k=4 flow times": {"recipe": "ki", "flow_samples_per_example": 4},
        }
    )
    sample = measure_sampling()
    ratio = train["ki"]["cpu"] / train["naive"]["cpu"]
    speedup = sample["uncached"]["cpu"] / sample["cached"]["cpu"]
    b = config.backbone
    lines = [
        "## Policy: training step and sampling latency (`benchmarks/policy.py`)",
        "",
        f"Default tiny config: backbone d={b.width}, {b.depth} layers, {b.num_image_tokens} image tokens; "
        f"expert d={config.expert.width}; {params['backbone'] / 1e6:.2f}M + {params['expert'] / 1e6:.2f}M "
        f"parameters. Synthetic batch: {PROMPT_LEN} prompt tokens, {FAST_LEN} FAST tokens (ki only), "
        f"H={config.expert.horizon}, D={config.expert.action_dim}. Median of {TRAIN_REPEATS} interleaved "
        "steps (forward + backward + AdamW), fp32, one thread; ratios from CPU time.",
        "",
        "| setting | CPU time a step at batch 32 (s) | vs naive | wall time (s) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {t['cpu']:.3f} | {t['cpu'] / train['naive']['cpu']:.2f}× | {t['wall']:.3f} |"
            for name, t in train.items()
        ),
        "",
        f"ki / naive = **{ratio:.2f}×** (target ≤ 1.25×: {'met' if ratio <= 1.25 else 'not met'}). "
        "ki runs the backbone over 42 more suffix tokens and the LM head on them; the stop-gradient "
        "itself costs nothing (ki ≈ joint_fast); with robot-only batches `stopgrad` runs no backbone "
        "backward at all.",
        "",
        f"Batch-1 sampling, 10 Euler steps, median of {SAMPLE_BLOCKS * SAMPLE_BLOCK_SIZE} calls "
        f"({SAMPLE_BLOCKS} alternating blocks of {SAMPLE_BLOCK_SIZE} consecutive calls per path):",
        "",
        "| path | CPU time (ms) | wall time (ms) |",
        "|---|---|---|",
        f"| prefix KV cache (prefix once, expert ×10) | {sample['cached']['cpu'] * 1e3:.1f} "
        f"| {sample['cached']['wall'] * 1e3:.1f} |",
        f"| no cache (backbone + expert ×10) | {sample['uncached']['cpu'] * 1e3:.1f} "
        f"| {sample['uncached']['wall'] * 1e3:.1f} |",
        "",
        f"Cache speed-up: **{speedup:.2f}×** (target ≥ 3×: {'met' if speedup >= 3 else 'not met'}); "
        "cached and uncached chunks agree within 1e-5.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("policy", body)


if __name__ == "__main__":
    main()
