import dataclasses
import json

import numpy as np
import pytest

from kivla.data.world_expert import expert_style, plan_actions
from kivla.eval.baselines import OraclePolicy, RandomPolicy
from kivla.eval.rollout import EvalConfig, episode_seed, evaluate, success_interval


def test_oracle_succeeds_and_follows(tmp_path):
    result = evaluate(OraclePolicy(), EvalConfig(episodes=12, num_envs=6, videos=1), out_dir=tmp_path)
    summary = result.summary()
    for split in ("train", "ood"):
        assert summary[split]["success_rate"] >= 0.95
        assert summary[split]["follow_rate"] >= 0.95
        assert set(summary[split]["families"]) == {"place_on", "place_in", "push", "reach"}
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["summary"]["train"]["episodes"] == 12
    assert "| train | push |" in (tmp_path / "eval.md").read_text()
    assert len(result.videos) == 2 and all(p.endswith(".gif") for p in result.videos)


def test_success_interval_is_wilsons():
    low, high = success_interval(24, 48)
    assert low == pytest.approx(0.3636, abs=1e-3) and high == pytest.approx(0.6364, abs=1e-3)
    low, high = success_interval(0, 48)
    assert low == 0.0 and high == pytest.approx(0.0741, abs=1e-3)  # never a zero-width interval
    assert all(np.isnan(success_interval(0, 0)))


def test_random_scores_low():
    summary = evaluate(RandomPolicy(seed=1), EvalConfig(episodes=8, num_envs=8, splits=("train",))).summary()
    assert summary["train"]["success_rate"] <= 0.3
    low, high = summary["train"]["success_ci95"]
    assert low <= summary["train"]["success_rate"] <= high
    assert summary["train"]["mean_length"] > 100


class WrongObjectOracle(OraclePolicy):
    """The expert's plan for the same task on another object: succeeds at nothing, follows nothing."""

    def act(self, obs):
        chunks = []
        for env in self.env.envs:
            task = dataclasses.replace(env.task, target=1, start=tuple(env.scene.positions[1]))
            plan = plan_actions(env.scene, task, expert_style(env))
            chunks.append(plan[np.minimum(np.arange(10), len(plan) - 1)])
        return np.stack(chunks)


def test_follow_rate_detects_the_wrong_object():
    config = EvalConfig(episodes=8, num_envs=8, splits=("train",), families=("place_in", "push"))
    summary = evaluate(WrongObjectOracle(), config).summary()
    assert summary["train"]["follow_rate"] == 0.0
    assert summary["train"]["success_rate"] == 0.0


def test_seeds_are_deterministic_and_distinct():
    a = evaluate(RandomPolicy(seed=3), EvalConfig(episodes=4, num_envs=4, splits=("ood",), max_steps=20))
    b = evaluate(RandomPolicy(seed=3), EvalConfig(episodes=4, num_envs=4, splits=("ood",), max_steps=20))
    assert [e.success for e in a.episodes] == [e.success for e in b.episodes]
    assert [e.instruction for e in a.episodes] == [e.instruction for e in b.episodes]
    seeds = {episode_seed(0, s, f, i) for s in ("train", "ood") for f in ("push", "reach") for i in range(5)}
    assert len(seeds) == 20


def test_bad_chunks_and_config_raise():
    class Bad:
        def act(self, obs):
            return np.zeros((len(obs["instruction"]), 5, 3))

    with pytest.raises(ValueError, match="expected actions"):
        evaluate(Bad(), EvalConfig(episodes=1, num_envs=1, splits=("train",)))
    with pytest.raises(ValueError, match=r"EvalConfig\.splits"):
        EvalConfig(splits=("test",))
    with pytest.raises(ValueError, match="execute_steps"):
        EvalConfig(execute_steps=0)


@pytest.mark.slow
def test_oracle_many_episodes():
    summary = evaluate(OraclePolicy(), EvalConfig(episodes=200, num_envs=25)).summary()
    assert summary["train"]["success_rate"] >= 0.95 and summary["ood"]["success_rate"] >= 0.95
