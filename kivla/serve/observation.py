"""One client frame -> a validated request: images, states, prompts and (optionally) the flow noise.

Key names are openpi's LIBERO ones by default and set by `ObservationKeys` (`kivla serve --key`).
A frame holds one observation (image [S,S,3]) or a batch of them (image [B,S,S,3], state
[B,S_dim], prompt a list of B strings); the reply's actions are [H,D] or [B,H,D] accordingly.
Every check raises `BadRequest` naming the field and what it expected, before the policy runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

NOISE_KEY, NOISE_SEED_KEY = "noise", "noise_seed"  # kivla extensions, never required


class BadRequest(ValueError):
    """A frame the server refuses; the message names the field and the expected value."""


@dataclass(frozen=True)
class ObservationKeys:
    """Where each input sits in a client's observation dict."""

    image: str = "observation/image"
    state: str = "observation/state"
    prompt: str = "prompt"

    def __post_init__(self) -> None:
        for f in fields(self):
            if not isinstance(getattr(self, f.name), str) or not getattr(self, f.name):
                raise ValueError(f"ObservationKeys.{f.name}: expected a non-empty key name")

    @classmethod
    def parse(cls, pairs: list[str]) -> ObservationKeys:
        """["image=observation/wrist_image", ...] -> keys (`kivla serve --key`)."""
        names = {f.name for f in fields(cls)}
        given = {}
        for pair in pairs:
            name, sep, key = pair.partition("=")
            if not sep or name not in names or not key:
                raise ValueError(f"--key: expected NAME=KEY with NAME in {sorted(names)}, got {pair!r}")
            given[name] = key
        return cls(**given)


@dataclass
class Request:
    images: np.ndarray  # uint8 [n, S, S, 3]
    states: np.ndarray  # float32 [n, S_dim]
    prompts: list[str]  # n
    noise: np.ndarray | None  # float32 [n, H, D], or None: drawn by the server
    noise_seed: int | None
    batched: bool  # False: the reply's actions drop the batch axis

    @property
    def size(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class Spec:
    """What the served policy accepts."""

    image_size: int
    state_dim: int
    horizon: int
    action_dim: int
    keys: ObservationKeys = ObservationKeys()


def _array(obs: dict, key: str, what: str) -> np.ndarray:
    if key not in obs:
        raise BadRequest(f"{key}: missing (expected {what}); keys received: {sorted(map(str, obs))}")
    value = obs[key]
    if isinstance(value, np.ndarray):
        return value
    try:  # plain msgpack lists of numbers are accepted too
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"{key}: expected {what}, got {type(value).__name__}") from err
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"{key}: expected {what}, got {type(value).__name__}")
    return array


def _prompts(obs: dict, key: str, n: int | None) -> list[str]:
    what = "a str" if n is None else f"a list of {n} str"
    if key not in obs:
        raise BadRequest(f"{key}: missing (expected {what}); keys received: {sorted(map(str, obs))}")
    value = obs[key]
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        value = value.tolist()
    elif isinstance(value, np.str_ | np.bytes_):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if n is None:
        if not isinstance(value, str):
            raise BadRequest(f"{key}: expected {what}, got {type(value).__name__}")
        return [value]
    if not isinstance(value, list | tuple) or len(value) != n or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{key}: expected {what} (one per image), got {_describe(value)}")
    return list(value)


def _describe(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return type(value).__name__


def parse_request(obs: Any, spec: Spec) -> Request:
    """Validate one unpacked frame against the policy's spec."""
    if not isinstance(obs, dict):
        raise BadRequest(f"frame: expected a map of observation keys, got {type(obs).__name__}")
    keys, s = spec.keys, spec.image_size
    image = _array(obs, keys.image, f"uint8 [{s}, {s}, 3] or [B, {s}, {s}, 3]")
    batched = image.ndim == 4
    if image.shape[-3:] != (s, s, 3) or image.ndim not in (3, 4) or (batched and image.shape[0] < 1):
        raise BadRequest(
            f"{keys.image}: expected uint8 [{s}, {s}, 3] or [B, {s}, {s}, 3], got shape {list(image.shape)}"
        )
    if image.dtype != np.uint8:
        raise BadRequest(f"{keys.image}: expected dtype uint8 [{s}, {s}, 3], got {image.dtype}")
    images = image if batched else image[None]
    n = images.shape[0]
    lead = [n] if batched else []
    state_shape = [*lead, spec.state_dim]
    state = _array(obs, keys.state, f"float {state_shape}")
    if list(state.shape) != state_shape:
        raise BadRequest(f"{keys.state}: expected float {state_shape}, got shape {list(state.shape)}")
    if state.dtype.kind not in "biuf":
        raise BadRequest(f"{keys.state}: expected float {state_shape}, got dtype {state.dtype}")
    states = state.astype(np.float32).reshape(n, spec.state_dim)
    if not np.isfinite(states).all():
        raise BadRequest(f"{keys.state}: contains NaN or inf (expected finite float {state_shape})")
    prompts = _prompts(obs, keys.prompt, n if batched else None)
    noise, seed = None, None
    if NOISE_KEY in obs:
        noise_shape = [*lead, spec.horizon, spec.action_dim]
        noise = _array(obs, NOISE_KEY, f"float32 {noise_shape}")
        if list(noise.shape) != noise_shape or noise.dtype.kind != "f":
            raise BadRequest(
                f"{NOISE_KEY}: expected float32 {noise_shape}, got {noise.dtype} {list(noise.shape)}"
            )
        noise = noise.astype(np.float32).reshape(n, spec.horizon, spec.action_dim)
        if not np.isfinite(noise).all():
            raise BadRequest(f"{NOISE_KEY}: contains NaN or inf")
    elif NOISE_SEED_KEY in obs:
        seed = obs[NOISE_SEED_KEY]
        if isinstance(seed, np.integer):
            seed = int(seed)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise BadRequest(f"{NOISE_SEED_KEY}: expected an int in [0, 2**63), got {seed!r}")
    return Request(images, states, prompts, noise, seed, batched)


def unknown_words(text_tokenizer: Any, prompt: str) -> list[str]:
    """The words of `prompt` that the policy's text tokenizer maps to <unk> (none for subword ones)."""
    unk = text_tokenizer.token_id("<unk>")
    hf = getattr(text_tokenizer, "tokenizer", None)
    if unk is None or hf is None or not hasattr(hf, "encode"):
        return []
    encoding = hf.encode(prompt, add_special_tokens=False)
    return [prompt[a:b] for i, (a, b) in zip(encoding.ids, encoding.offsets, strict=True) if i == unk]
