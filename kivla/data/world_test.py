"""The built-in world: rendering, seeding, task splits, env API, vector env."""

import numpy as np
import pytest

from kivla.data.world_env import ACTION_DIM, STATE_DIM, TabletopEnv, VectorEnv, WorldConfig, step_scene
from kivla.data.world_expert import expert_action, rollout_expert
from kivla.data.world_scene import COLOR_NAMES, SHAPES, Renderer, Scene
from kivla.data.world_tasks import FAMILIES, compositions, is_held_out, sample_task


@pytest.mark.parametrize("size", [32, 64, 97, 256])
def test_render_sizes(size):
    obs, _ = TabletopEnv(WorldConfig(image_size=size)).reset(seed=1)
    assert obs["image"].shape == (size, size, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
    assert isinstance(obs["instruction"], str) and obs["instruction"]


def test_bad_config_names_field():
    with pytest.raises(ValueError, match="image_size"):
        WorldConfig(image_size=16)
    with pytest.raises(ValueError, match="families"):
        WorldConfig(families=("fly",))
    with pytest.raises(ValueError, match="split"):
        WorldConfig(split="test")


def test_shapes_render_differently_and_in_color():
    renderer = Renderer(64)
    masks = [renderer.shape_mask(s, 0.5, 0.5) for s in range(len(SHAPES))]
    areas = [m.sum() for m in masks]
    assert all(a > 20 for a in areas) and len({tuple(m.ravel()) for m in masks}) == 3
    scene = Scene(np.array([[0.5, 0.5]]), np.array([2]), np.array([0]), ee=np.array([0.1, 0.9, 1.0, 1.0]))
    image = renderer.render(scene)
    assert tuple(image[32, 32]) == (40, 80, 220)  # the blue circle's center


def test_same_seed_same_episode():
    env_a, env_b = TabletopEnv(), TabletopEnv()
    a, b = rollout_expert(env_a, 123), rollout_expert(env_b, 123)
    for key in ("images", "states", "actions"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["task"] == b["task"]
    c = rollout_expert(env_a, 124)
    assert c["task"].instruction != a["task"].instruction or not np.array_equal(
        c["actions"][:5], a["actions"][:5]
    )


def test_ood_compositions_disjoint_from_train():
    train, ood = set(compositions("train")), set(compositions("ood"))
    assert train.isdisjoint(ood) and ood
    assert len(train) + len(ood) == len(COLOR_NAMES) * len(SHAPES) * len(FAMILIES)
    # every color, shape and family alone is still seen in training
    assert {c for c, _, _ in train} == set(range(len(COLOR_NAMES)))
    assert {s for _, s, _ in train} == set(range(len(SHAPES)))
    assert {f for _, _, f in train} == set(range(len(FAMILIES)))
    rng = np.random.default_rng(0)
    names = lambda t: (COLOR_NAMES.index(t[0]), SHAPES.index(t[1]), FAMILIES.index(t[2]))  # noqa: E731
    train_seen = {names(sample_task(rng, "train")[0].composition) for _ in range(400)}
    ood_seen = {names(sample_task(rng, "ood")[0].composition) for _ in range(200)}
    assert train_seen <= train and ood_seen <= ood
    assert not any(is_held_out(*t) for t in train_seen) and all(is_held_out(*t) for t in ood_seen)


def test_env_episodes_follow_split():
    for split in ("train", "ood"):
        env = TabletopEnv(WorldConfig(split=split))
        for seed in range(30):
            _, info = env.reset(seed)
            c, s, f = info["task"].composition
            assert is_held_out(COLOR_NAMES.index(c), SHAPES.index(s), FAMILIES.index(f)) == (split == "ood")
            assert c in info["task"].instruction and s in info["task"].instruction


def test_step_api_and_validation():
    env = TabletopEnv()
    env.reset(seed=5)
    _obs, reward, terminated, truncated, info = env.step(np.full(ACTION_DIM, 0.5, dtype=np.float32))
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert info["t"] == 1
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([0.5, np.nan, 0.5, 0.5]))


def test_truncation_at_max_steps():
    env = TabletopEnv(WorldConfig(max_steps=3))
    env.reset(seed=0)
    hold = env.state()[:4].copy()
    flags = [env.step(hold)[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_grasp_carry_release_physics():
    scene = Scene(np.array([[0.5, 0.5], [0.8, 0.8]]), np.array([0, 1]), np.array([0, 1]))
    scene.ee = np.array([0.51, 0.5, 0.1, 1.0])
    step_scene(scene, np.array([0.51, 0.5, 0.1, 0.0]))  # close low over object 0 -> grasp
    assert scene.held == 0
    step_scene(scene, np.array([0.55, 0.5, 0.5, 0.0]))
    np.testing.assert_allclose(scene.positions[0], [0.54, 0.5])
    step_scene(scene, np.array([0.55, 0.5, 0.5, 1.0]))  # open -> release where it is
    assert scene.held == -1
    # one step moves at most MAX_XY_STEP
    step_scene(scene, np.array([1.0, 0.5, 0.5, 1.0]))
    assert scene.ee[0] == pytest.approx(0.61)


def test_vector_env_matches_single_envs():
    seeds = [3, 4, 5]
    venv = VectorEnv(WorldConfig(), num_envs=3)
    obs, _infos = venv.reset(seeds)
    singles = [TabletopEnv() for _ in seeds]
    for env, seed in zip(singles, seeds, strict=True):
        env.reset(seed)
    assert obs["image"].shape == (3, 64, 64, 3) and obs["state"].shape == (3, STATE_DIM)
    for _ in range(200):
        actions = np.stack([expert_action(env) for env in venv.envs])
        obs, _, _, _, _ = venv.step(actions)
        if venv.done.all():
            break
    assert venv.success.all()
    for i, env in enumerate(singles):
        while True:
            *_, term, trunc, _ = env.step(expert_action(env))
            if term or trunc:
                break
        np.testing.assert_array_equal(env.state(), obs["state"][i])
    with pytest.raises(ValueError, match="actions"):
        venv.step(np.zeros((2, ACTION_DIM)))


def test_parse_instruction_inverts_the_grammar():
    from kivla.data.world_tasks import parse_instruction

    rng = np.random.default_rng(1)
    for i in range(500):
        task, _ = sample_task(rng, "ood" if i % 3 == 0 else "train")
        assert parse_instruction(task.instruction) == task.composition
    assert parse_instruction("put the red circle on the moon") is None
    assert parse_instruction("push the pink circle left") is None


def test_label_map_matches_the_rendered_pixels():
    from kivla.data.world_scene import COLORS, GRIPPER_LABEL, TABLE_RGB, object_labels

    rng = np.random.default_rng(4)
    renderer = Renderer(64)
    for _ in range(5):
        env = TabletopEnv()
        env.reset(seed=int(rng.integers(1000)))
        scene = env.scene
        image, labels = renderer.render(scene), renderer.label_map(scene)
        classes = object_labels(scene)
        for i, cls in enumerate(classes):
            pixels = image[labels == cls]
            assert len(pixels) > 5  # the gripper ring may cover part of an object
            assert (pixels == COLORS[COLOR_NAMES[scene.colors[i]]]).all()
        gripper = image[labels == GRIPPER_LABEL]
        assert len(gripper) > 0 and not (gripper == TABLE_RGB).all(axis=1).any()
        assert labels.max() <= GRIPPER_LABEL and len(set(classes.tolist())) == scene.num_objects


@pytest.mark.parametrize("family", FAMILIES)
def test_privileged_state_carries_target_and_goal(family):
    from kivla.data.world_env import PRIVILEGED_NAMES
    from kivla.data.world_tasks import is_success

    env = TabletopEnv(WorldConfig(privileged_state=True))
    assert env.config.state_names[-len(PRIVILEGED_NAMES) :] == PRIVILEGED_NAMES
    obs, _ = env.reset(seed=3, options={"family": family})
    assert obs["state"].shape == (STATE_DIM + len(PRIVILEGED_NAMES),)
    plain, _ = TabletopEnv().reset(seed=3, options={"family": family})
    np.testing.assert_array_equal(obs["state"][:STATE_DIM], plain["state"])  # the same episode
    np.testing.assert_allclose(obs["state"][STATE_DIM : STATE_DIM + 2], env.scene.positions[env.task.target])
    for _ in range(env.config.max_steps):  # the expert ends with the target at (or past) the goal
        obs, _, done, _, _ = env.step(expert_action(env))
        if done:
            break
    assert is_success(env.task, env.scene)
    target, goal = obs["state"][STATE_DIM : STATE_DIM + 2], obs["state"][STATE_DIM + 2 :]
    tolerance = {"place_on": 0.04, "place_in": 0.1, "push": 0.1, "reach": 1e-6}[family]
    assert np.linalg.norm(target - goal) < tolerance, (family, target, goal)
