"""Save and load a policy: `config.json` (the KIPolicyConfig) + `model.safetensors` (weights and
action bounds). No pickle; each file is written to a temp file in the same directory, then renamed."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_model, save_model

from kivla.model.config import KIPolicyConfig
from kivla.model.policy import KIPolicy

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def save_policy(policy: KIPolicy, directory: str | os.PathLike) -> Path:
    """Write the policy into `directory` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.")
    with os.fdopen(fd, "w") as f:
        json.dump(policy.config.to_dict(), f, indent=2)
    os.replace(tmp, directory / CONFIG_FILE)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".safetensors")
    os.close(fd)
    save_model(policy, tmp)  # handles tied weights (HF backbones)
    os.replace(tmp, directory / WEIGHTS_FILE)
    return directory


def load_policy(directory: str | os.PathLike) -> KIPolicy:
    """The policy saved by `save_policy` (an HF backbone's config is rebuilt from its local `path`)."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"load_policy: missing {name} in {directory}")
    config = KIPolicyConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    policy = KIPolicy(config)
    load_model(policy, directory / WEIGHTS_FILE)
    return policy
