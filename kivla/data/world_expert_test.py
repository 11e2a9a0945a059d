"""The scripted expert: success per family, smoothness, episode lengths, the oracle hooks."""

import numpy as np
import pytest

from kivla.data.world_env import TabletopEnv, WorldConfig
from kivla.data.world_expert import expert_action, expert_chunk, min_jerk, rollout_expert
from kivla.data.world_tasks import FAMILIES


def _success_rate(family: str, split: str, seeds: range) -> tuple[float, list[int]]:
    env = TabletopEnv(WorldConfig(split=split))
    episodes = [rollout_expert(env, s, {"family": family}) for s in seeds]
    return float(np.mean([e["success"] for e in episodes])), [len(e["actions"]) for e in episodes]


@pytest.mark.parametrize("split", ["train", "ood"])
@pytest.mark.parametrize("family", FAMILIES)
def test_expert_succeeds_50_seeds(family, split):
    # Fast enough (about 0.5 s a family) to run in the default suite.
    rate, lengths = _success_rate(family, split, range(50))
    assert rate >= 0.95, f"{family}/{split}: {rate:.2f}"
    assert max(lengths) < 200  # never truncated


@pytest.mark.parametrize("family", FAMILIES)
def test_goal_is_where_the_target_ends_up(family):
    """`goal` (annotation.goal) is the target's final centre: in the success region of its task,
    at the target's start for a reach (the world's goal point within the tasks' tolerances)."""
    from kivla.data.world_tasks import PLACE_ON_TOLERANCE, REGION_SIZE, goal_point

    env = TabletopEnv(WorldConfig())
    for seed in range(10):
        episode = rollout_expert(env, seed, {"family": family})
        assert episode["success"]
        goal, task = episode["goal"], episode["task"]
        np.testing.assert_array_equal(goal, env.scene.positions[task.target])
        tolerance = {"place_on": PLACE_ON_TOLERANCE, "place_in": REGION_SIZE / 2**0.5, "push": 0.1,
                     "reach": 1e-9}[family]  # fmt: skip
        assert np.linalg.norm(goal - goal_point(task, env.scene)) <= tolerance, (family, seed)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_expert_succeeds_500_seeds(family):
    rate, _ = _success_rate(family, "train", range(10_000, 10_500))
    assert rate >= 0.95, f"{family}: {rate:.3f}"


def test_min_jerk_endpoints_and_zero_end_velocity():
    path = min_jerk(np.zeros(2), np.array([1.0, -2.0]), 20)
    np.testing.assert_allclose(path[-1], [1.0, -2.0])
    steps = np.diff(np.concatenate([np.zeros((1, 2)), path]), axis=0)
    assert np.abs(steps[0]).max() < 0.02 and np.abs(steps[-1]).max() < 0.02  # starts and ends slowly
    assert np.abs(steps).max() <= 1.875 * np.abs([1.0, -2.0]).max() / 20 + 1e-9


def test_expert_actions_are_smooth_and_bounded():
    env = TabletopEnv()
    for seed in range(8):
        actions = rollout_expert(env, seed)["actions"]
        assert actions.min() >= 0.0 and actions.max() <= 1.0
        jerk = np.diff(actions[:, :3], n=3, axis=0)
        assert np.abs(jerk).max() < 0.05  # position targets: no jumps


def test_expert_varies_between_episodes_of_one_task():
    env = TabletopEnv()
    a, b = rollout_expert(env, 1), rollout_expert(env, 2)
    assert len(a["actions"]) != len(b["actions"]) or not np.allclose(a["actions"], b["actions"])


def test_expert_chunk_matches_the_actions_it_takes():
    env = TabletopEnv()
    env.reset(seed=9)
    chunk = expert_chunk(env, 10)
    assert chunk.shape == (10, 4) and chunk.dtype == np.float32
    taken = []
    for _ in range(10):
        action = expert_action(env)
        taken.append(action)
        env.step(action)
    np.testing.assert_array_equal(np.stack(taken), chunk)
    long = expert_chunk(env, 500)  # past the plan's end the last action repeats
    np.testing.assert_array_equal(long[-1], long[-2])


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_recovers_after_perturbation(family):
    # The oracle re-plans from wherever a policy left the env.
    wins = 0
    for seed in range(6):
        env = TabletopEnv()
        env.reset(seed, {"family": family})
        rng = np.random.default_rng(seed)
        for _ in range(8):
            env.step(rng.uniform(0, 1, size=4))
        for _ in range(250):
            *_, terminated, _, _ = env.step(expert_action(env))
            if terminated:
                wins += 1
                break
    assert wins >= 5


def test_oracle_keeps_answering_past_the_plan():
    env = TabletopEnv(WorldConfig(max_steps=400))
    env.reset(seed=2, options={"family": "reach"})
    for _ in range(300):  # far beyond the plan's length, ignoring termination
        action = expert_action(env)
        env.step(action)
    assert env.expert_cache["plan"].shape[1] == 4 and np.isfinite(action).all()
    with pytest.raises(ValueError, match="horizon"):
        expert_chunk(env, 0)
