"""What a study measures on its checkpoints: flow validation, closed loop, language, gradients,
and the rate-distortion of every discrete target on the study's own chunks."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from kivla.data.chunks import load_chunks
from kivla.eval.baselines import BundlePolicy
from kivla.eval.gradients import GradientStudyConfig, gradient_study, robot_batches
from kivla.eval.language import LanguageConfig, language_metrics, retention
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.eval.validation import ValidationConfig, flow_validation
from kivla.model.bundle import PolicyBundle
from kivla.pipelines.budgets import Budget, Variant


@contextmanager
def single_thread():
    """Evaluation runs small batches: one torch thread avoids oversubscribing a busy CPU (measured
    10-20x slower with 2 threads on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@single_thread()
def evaluate_checkpoint(
    bundle: PolicyBundle, budget: Budget, val_data: Path, reference_language: dict, final: bool
) -> dict:
    """Flow validation MSE, closed-loop ID/OOD success and follow rate, language metrics and retention."""
    episodes = budget.final_eval_episodes if final else budget.eval_episodes
    rollout = evaluate(
        BundlePolicy(bundle, seed=0),
        EvalConfig(
            episodes=episodes,
            image_size=budget.image_size,
            max_steps=budget.max_steps,
            num_envs=min(budget.num_envs, max(1, episodes // 4)),
            videos=0,
        ),
    ).summary()
    vqa, caption, text = budget.language
    lang = language_metrics(bundle, LanguageConfig(num_vqa=vqa, num_caption=caption, num_text=text))
    return {
        "flow_mse": flow_validation(bundle, val_data, ValidationConfig(num_frames=budget.val_frames))["mse"],
        "rollout": rollout,
        "language": lang,
        "retention": retention(lang, reference_language),
    }


@single_thread()
def run_gradient_study(
    budget: Budget, runs: dict[str, list[dict]], variants: dict[str, Variant], data: tuple[Path, Path]
) -> dict:
    """The gradient study (seed 0) of the variants without insulation, picked by `insulate=False`:
    the one without a discrete target (naive) at its first and last checkpoint, with a FAST
    tokenizer fitted on the training chunks giving CE targets to its (untrained) action-token head;
    and, when the study has one, the one with a discrete target (joint_fast) at its last checkpoint
    (a trained FAST head: the fairer comparison of the two losses)."""
    from kivla.tokenizers import fit_tokenizer

    uninsulated = [n for n, v in variants.items() if not v.recipe_preset.insulate]
    subject = next(n for n in uninsulated if not variants[n].uses_discrete_loss)
    comparison = next((n for n in uninsulated if variants[n].uses_discrete_loss), None)
    chunks = load_chunks(data[0], budget.horizon, max_chunks=budget.tokenizer_chunks)
    tokenizer = fit_tokenizer("fast", chunks)
    gconfig = GradientStudyConfig(
        bins=budget.grad_bins, batches=budget.grad_batches, batch_size=budget.grad_batch_size
    )
    subject_ckpts = runs[subject][0]["checkpoints"]
    points = [("first", subject, subject_ckpts[0]), ("last", subject, subject_ckpts[-1])]
    if comparison is not None:
        points.append(("joint_fast_last", comparison, runs[comparison][0]["checkpoints"][-1]))
    out: dict[str, Any] = {"variant": subject}
    for label, variant, ckpt in points:
        bundle = PolicyBundle.load(ckpt["path"])
        own = bundle.builder.action_tokenizer
        batches = robot_batches(bundle, data[1], gconfig, None if own is not None else tokenizer)
        out[label] = {
            "variant": variant,
            "step": ckpt["step"],
            **gradient_study(bundle.policy, batches, gconfig),
        }
    return out


def tokenizer_table(budget: Budget, train_data: Path) -> list[dict]:
    """Rate-distortion of every discrete target on the study's own chunks (80/20 split)."""
    from kivla.tokenizers.evaluate import fit_and_evaluate

    chunks = load_chunks(train_data, budget.horizon, max_chunks=budget.tokenizer_chunks)
    return [r.to_dict() for r in fit_and_evaluate(["fast", "binning", "wavelet", "vq"], chunks)]
