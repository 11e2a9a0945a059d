"""Meta-World envs: deterministic pixels and states, upright corner views, the faucet's direction."""

from importlib.util import find_spec

import numpy as np
import pytest

from kivla.data.metaworld_env import MetaWorldConfig, MetaWorldEnv, rollout_expert

# Skipped only where the extra is missing (`make test` installs it); a skipif, not importorskip:
# importing metaworld would load mujoco before kivla sets MUJOCO_GL.
pytestmark = pytest.mark.skipif(find_spec("metaworld") is None, reason="pip install kivla[metaworld]")


def _frames(task: str, index: int, steps: int = 5) -> tuple[np.ndarray, np.ndarray]:
    env = MetaWorldEnv(task, MetaWorldConfig(image_size=64))
    try:
        obs = env.reset(index)
        images, states = [obs["image"]], [obs["state"]]
        for k in range(steps):
            obs, _ = env.step(np.array([0.5, -0.5, 0.2 * k, 1.0]))
            images.append(obs["image"])
            states.append(obs["state"])
        return np.stack(images), np.stack(states)
    finally:
        env.close()


def test_rendering_and_states_are_deterministic():
    images_a, states_a = _frames("push-v3", 3)
    images_b, states_b = _frames("push-v3", 3)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(states_a, states_b)
    assert images_a.shape == (6, 64, 64, 3) and images_a.dtype == np.uint8 and states_a.shape == (6, 4)
    assert not np.array_equal(images_a[0], _frames("push-v3", 4, steps=0)[0][0])  # another configuration


def test_config_errors_name_the_field():
    with pytest.raises(
        ValueError, match=r"MetaWorldConfig\.image_size: expected an even number in 32\.\.256"
    ):
        MetaWorldConfig(image_size=300)
    with pytest.raises(ValueError, match=r"MetaWorldConfig\.camera"):
        MetaWorldConfig(camera="front")
    with pytest.raises(ValueError, match=r"MetaWorldConfig\.max_steps: expected 1\.\.500"):
        MetaWorldConfig(max_steps=501)


def test_faucet_open_turns_counter_clockwise():
    # The instructions say so: the hinge angle about +z grows when the expert opens the faucet.
    angles = {}
    for task in ("faucet-open-v3", "faucet-close-v3"):
        env = MetaWorldEnv(task, render=False)
        episode = rollout_expert(env, 0)
        assert episode["success"]
        angles[task] = float(env.env.data.joint("knob_Joint_1").qpos[0])
        env.close()
    assert angles["faucet-open-v3"] > 0.5 and angles["faucet-close-v3"] < -0.5
