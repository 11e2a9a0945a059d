"""`PolicyBundle`: a trained policy with everything it needs to act, saved as one directory.

A bundle directory (also every training checkpoint directory) holds:
  policy.json             format, KIPolicyConfig, vocabulary layout, batch-builder settings
  model.safetensors       weights (`ema.safetensors` too in checkpoints: the EMA weights)
  text_tokenizer.json     the word-level tokenizer of the prompt and answers
  action_tokenizer/       the discrete action target (absent when the recipe has none)
  normalizer.json         quantile bounds of actions and states (absent before robot training)
No pickle anywhere: safetensors and JSON only.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from kivla.data.lerobot_format import ACTION_KEY, STATE_KEY
from kivla.data.normalize import QuantileNormalizer
from kivla.io import atomic_directory, write_json
from kivla.model.batch import BatchBuilder
from kivla.model.config import KIPolicyConfig
from kivla.model.policy import KIPolicy
from kivla.model.text_pretrained import load_text_tokenizer
from kivla.model.vocab import VocabLayout

FORMAT = "kivla-policy/1"


class PolicyBundle:
    """KIPolicy + batch builder + tokenizers + normalizer; `act` maps raw observations to raw actions."""

    def __init__(
        self,
        policy: KIPolicy,
        builder: BatchBuilder,
        normalizer: QuantileNormalizer | None = None,
        recipe: str | None = None,
    ) -> None:
        self.policy, self.builder, self.normalizer, self.recipe = policy, builder, normalizer, recipe
        if normalizer is not None and ACTION_KEY in normalizer.bounds:
            low, high = normalizer.bounds[ACTION_KEY]
            policy.set_action_bounds(torch.as_tensor(low), torch.as_tensor(high))

    @property
    def config(self) -> KIPolicyConfig:
        return self.policy.config

    @property
    def horizon(self) -> int:
        return self.config.expert.horizon

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        if self.normalizer is None or STATE_KEY not in self.normalizer.bounds:
            return np.asarray(state, dtype=np.float32)
        return self.normalizer.normalize(STATE_KEY, state)

    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Any],
        num_steps: int = 10,
        generator: torch.Generator | None = None,
        noise: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """obs {"image": uint8 [B,S,S,3], "state": [B,S_dim], "instruction": list[str]} -> actions [B,H,D].

        The flow noise [B,H,D] is drawn from `generator`, or given as `noise` (a policy server
        batching requests gives each example its own)."""
        for key in ("image", "instruction"):
            if key not in obs:
                raise ValueError(f"obs: missing {key!r} (expected image, state, instruction)")
        images = list(np.asarray(obs["image"]))
        states = obs.get("state")
        states = list(self.normalize_state(np.asarray(states))) if states is not None else None
        batch = self.builder.observation(images, list(obs["instruction"]), states)
        device = next(self.policy.parameters()).device
        self.policy.eval()
        if noise is not None:
            noise = torch.as_tensor(noise, dtype=torch.float32, device=device)
        actions = self.policy.sample_actions(
            batch.to(device), num_steps=num_steps, noise=noise, generator=generator
        )
        return actions.float().cpu().numpy()

    def set_keypoint_peak(self, peak: int) -> None:
        """Run-time choice of how keypoints 0 / 1 are read (ExpertConfig.keypoint_peak: -1 the
        spatial-softmax mean, r >= 0 a soft-argmax within r grid cells of the peak). With
        keypoint_teacher_forcing 1 the expert was trained on the named objects' true centres there,
        not on either reading, so a policy trained with one can be run with the other."""
        keypoints = self.policy.expert.keypoints
        if keypoints is None:
            raise ValueError("keypoint_peak: the policy has no keypoints (ExpertConfig.keypoints is 0)")
        keypoints.set_peak(peak)

    # -- files -----------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        b = self.builder
        return {
            "format": FORMAT,
            "recipe": self.recipe,
            "config": self.config.to_dict(),
            "layout": asdict(b.layout),
            "builder": {
                "image_size": b.image_size,
                "horizon": b.horizon,
                "action_dim": b.action_dim,
                "state_dim": b.state_dim,
                "state_input": b.state_input,
                "max_prompt_len": b.max_prompt_len,
                "max_suffix_len": b.max_suffix_len,
            },
        }

    def write_files(self, directory: str | Path, weights: bool = True) -> None:
        """Everything but optimizer state into `directory` (used inside atomic checkpoint writes)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "policy.json", self.metadata())
        self.builder.text.save(directory / "text_tokenizer.json")
        if self.builder.action_tokenizer is not None:
            self.builder.action_tokenizer.save(directory / "action_tokenizer")
        if self.normalizer is not None:
            self.normalizer.save(directory / "normalizer.json")
        if weights:
            from safetensors.torch import save_model

            save_model(self.policy, str(directory / "model.safetensors"))

    def save(self, directory: str | Path) -> Path:
        """Write the bundle atomically."""
        with atomic_directory(directory) as tmp:
            self.write_files(tmp)
        return Path(directory)

    @classmethod
    def load(
        cls, directory: str | Path, weights: str = "auto", device: str | torch.device = "cpu"
    ) -> PolicyBundle:
        """Load a bundle or checkpoint directory. weights: auto (EMA when present) | ema | model."""
        from kivla.tokenizers import load_tokenizer

        d = Path(directory)
        meta_path = d / "policy.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"policy: {meta_path} not found (is {d} a kivla policy or checkpoint?)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        config = KIPolicyConfig.from_dict(meta["config"])
        text = load_text_tokenizer(d / "text_tokenizer.json")  # word-level, or a pretrained LM's
        action_tokenizer = (
            load_tokenizer(d / "action_tokenizer") if (d / "action_tokenizer").is_dir() else None
        )
        builder = BatchBuilder(
            text, action_tokenizer, layout=VocabLayout(**meta["layout"]), **meta["builder"]
        )
        normalizer = (
            QuantileNormalizer.load(d / "normalizer.json") if (d / "normalizer.json").is_file() else None
        )
        policy = KIPolicy(config)
        policy.load_state_dict(load_weights_file(d, weights))
        bundle = cls(policy.to(device), builder, normalizer, meta.get("recipe"))
        return bundle


def load_weights_file(directory: Path, weights: str = "auto") -> dict[str, torch.Tensor]:
    """The policy state dict of a bundle or checkpoint: EMA weights (`ema.safetensors`) or raw ones."""
    if weights not in ("auto", "ema", "model"):
        raise ValueError(f"weights: expected auto, ema or model, got {weights!r}")
    ema = directory / "ema.safetensors"
    if weights == "ema" or (weights == "auto" and ema.is_file()):
        if not ema.is_file():
            raise FileNotFoundError(f"weights='ema': {ema} not found")
        # AveragedModel keeps the policy under "module." plus its own step counter.
        state = load_file(ema)
        return {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
    path = directory / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"policy weights: {path} not found")
    return load_file(path)
