import numpy as np
import pytest

from kivla.model.testing import tiny_world_bundle
from kivla.serve.conftest import PROMPT, make_obs
from kivla.serve.observation import BadRequest, ObservationKeys, Spec, parse_request, unknown_words

SPEC = Spec(image_size=32, state_dim=5, horizon=8, action_dim=4)


def test_single_observation():
    obs = make_obs(1)
    r = parse_request(obs, SPEC)
    assert not r.batched and r.size == 1 and r.prompts == [PROMPT]
    assert r.images.shape == (1, 32, 32, 3) and r.states.shape == (1, 5) and r.states.dtype == np.float32
    np.testing.assert_array_equal(r.images[0], obs["observation/image"])
    assert r.noise is None and r.noise_seed is None


def test_batched_observation_with_noise_and_mapped_keys():
    keys = ObservationKeys.parse(["image=cam", "state=qpos", "prompt=task"])
    spec = Spec(32, 5, 8, 4, keys)
    obs = {
        "cam": np.zeros((3, 32, 32, 3), np.uint8),
        "qpos": np.ones((3, 5), np.float64),
        "task": np.array([PROMPT, "reach the red circle", PROMPT]),  # numpy strings work too
        "noise": np.zeros((3, 8, 4), np.float32),
    }
    r = parse_request(obs, spec)
    assert r.batched and r.size == 3 and r.noise.shape == (3, 8, 4) and r.prompts[1] == "reach the red circle"


def test_noise_seed_accepts_python_and_numpy_ints():
    assert parse_request({**make_obs(), "noise_seed": 5}, SPEC).noise_seed == 5
    assert parse_request({**make_obs(), "noise_seed": np.int64(6)}, SPEC).noise_seed == 6


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"observation/state": None}, r"observation/state: missing \(expected float \[5\]\)"),
        (
            {"observation/image": np.zeros((16, 16, 3), np.uint8)},
            r"observation/image: expected uint8 \[32, 32, 3\]",
        ),
        ({"observation/image": np.zeros((32, 32, 3), np.float32)}, "observation/image: expected dtype uint8"),
        ({"observation/image": "a picture"}, "observation/image: expected uint8"),
        ({"observation/state": np.zeros(7, np.float32)}, r"observation/state: expected float \[5\]"),
        ({"observation/state": np.full(5, np.nan, np.float32)}, "observation/state: contains NaN"),
        ({"observation/state": np.array(["a"] * 5)}, "observation/state: expected float"),
        ({"prompt": 3}, "prompt: expected a str"),
        ({"noise": np.zeros((8, 3), np.float32)}, r"noise: expected float32 \[8, 4\]"),
        ({"noise_seed": -1}, "noise_seed: expected an int"),
        ({"noise_seed": "7"}, "noise_seed: expected an int"),
    ],
)
def test_bad_fields_are_named(change, match):
    obs = make_obs()
    for key, value in change.items():
        if value is None:
            del obs[key]
        else:
            obs[key] = value
    with pytest.raises(BadRequest, match=match):
        parse_request(obs, SPEC)


def test_batched_prompt_count_must_match():
    obs = {"observation/image": np.zeros((2, 32, 32, 3), np.uint8), "observation/state": np.zeros((2, 5)),
           "prompt": [PROMPT]}  # fmt: skip
    with pytest.raises(BadRequest, match="prompt: expected a list of 2 str"):
        parse_request(obs, SPEC)


def test_frame_must_be_a_map():
    with pytest.raises(BadRequest, match="frame: expected a map"):
        parse_request([1, 2], SPEC)


def test_key_option_errors():
    with pytest.raises(ValueError, match="--key: expected NAME=KEY"):
        ObservationKeys.parse(["camera=cam"])
    with pytest.raises(ValueError, match="--key"):
        ObservationKeys.parse(["image"])


def test_unknown_words():
    text = tiny_world_bundle().builder.text
    assert unknown_words(text, PROMPT) == []
    assert unknown_words(text, "put the zorblax on the Blue square") == ["zorblax"]
