"""Evaluation speed: closed-loop throughput of the oracle and of an (untrained) default tiny policy,
and language scoring throughput, on one torch thread (how the studies evaluate)."""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.report import write_section
from kivla.data.language import language_examples
from kivla.data.normalize import QuantileNormalizer
from kivla.data.world_env import ACTION_DIM, STATE_DIM
from kivla.eval.baselines import BundlePolicy, OraclePolicy
from kivla.eval.language import score_examples
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.model.batch import BatchBuilder
from kivla.model.bundle import PolicyBundle

IMAGE, HORIZON = 64, 50


def tiny_bundle() -> PolicyBundle:
    """The default tiny architecture (`kivla.model.presets.SIZES["tiny"]`) with random weights."""
    from kivla.model.assemble import assemble_bundle, policy_config
    from kivla.train.fitting import MAX_PROMPT_LEN, MAX_SUFFIX_LEN, fit_text_tokenizer, vocab_layout

    text = fit_text_tokenizer()
    layout = vocab_layout(text)
    config = policy_config("tiny", "ki", image_size=IMAGE, vocab_size=layout.vocab_size, horizon=HORIZON,
                           action_dim=ACTION_DIM, state_dim=STATE_DIM, discrete_target="none")  # fmt: skip
    builder = BatchBuilder(
        text,
        None,
        image_size=IMAGE,
        horizon=HORIZON,
        action_dim=ACTION_DIM,
        state_dim=STATE_DIM,
        max_prompt_len=MAX_PROMPT_LEN,
        max_suffix_len=MAX_SUFFIX_LEN,
        layout=layout,
    )
    bounds = {
        "action": (np.zeros(ACTION_DIM), np.ones(ACTION_DIM)),
        "observation.state": (np.zeros(STATE_DIM), np.ones(STATE_DIM)),
    }
    return assemble_bundle(config, builder, QuantileNormalizer(bounds), "ki", seed=0)


def closed_loop(policy, episodes: int, num_envs: int, max_steps: int) -> dict[str, float]:
    start = time.perf_counter()
    result = evaluate(
        policy,
        EvalConfig(
            episodes=episodes,
            splits=("train",),
            num_envs=num_envs,
            max_steps=max_steps,
            image_size=IMAGE,
            videos=0,
        ),
    )
    seconds = time.perf_counter() - start
    steps = sum(e.length for e in result.episodes)
    return {"episodes_per_s": episodes / seconds, "env_steps_per_s": steps / seconds, "seconds": seconds}


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        oracle = closed_loop(OraclePolicy(), episodes=200, num_envs=25, max_steps=200)
        rows.append(("oracle (scripted expert)", "25", oracle))
        bundle = tiny_bundle()
        for num_envs in (1, 10):
            r = closed_loop(BundlePolicy(bundle), episodes=20, num_envs=num_envs, max_steps=50)
            rows.append(("tiny policy (4.8M params), replan every 10 steps", str(num_envs), r))
        examples = list(language_examples(0, 256, image_size=IMAGE))
        start = time.perf_counter()
        score_examples(bundle, examples, batch_size=64)
        lang_per_s = len(examples) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    lines = [
        "## Evaluation (`benchmarks/eval.py`)",
        "",
        "Closed loop in the built-in world (64 px, execute 10 actions a chunk, then replan; envs of one",
        "(split, family) stepped together) and language scoring (one teacher-forced pass a batch of 64),",
        "on one torch thread.",
        "",
        "| policy | envs together | episodes / s | env steps / s |",
        "|---|---:|---:|---:|",
    ]
    for name, envs, r in rows:
        lines.append(f"| {name} | {envs} | {r['episodes_per_s']:.1f} | {r['env_steps_per_s']:,.0f} |")
    lines += [
        "",
        f"Language scoring (VQA / captions / text, untrained tiny backbone): {lang_per_s:,.0f} examples/s.",
    ]
    write_section("eval", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
