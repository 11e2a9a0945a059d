"""`kivla study ki` and `kivla study targets`: train every variant with N seeds, evaluate every checkpoint.

One study = data (a train and a held-out validation dataset from the world's generator) + one
language-pretrained backbone (the language reference) + for each variant and seed a co-training
run at the same budget. Every saved checkpoint is evaluated: flow validation MSE on the held-out
dataset, closed-loop success and follow rate on the train (ID) and OOD splits, and VQA / caption
metrics on held-out scenes against the pretrained reference. A gradient study runs on the naive
recipe. Results go to `<report>/<name>.json`, `<report>/<name>.md` and PNGs in `<report>/<name>/`.

Everything is cached under the work directory: a finished run (its `study_eval.json`) is not
trained or evaluated again, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kivla.eval.budgets import BUDGETS, VARIANTS, Budget
from kivla.eval.language import LanguageConfig, language_metrics, retention
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.eval.validation import ValidationConfig, flow_validation

STUDIES = ("ki", "targets")
HELD_OUT_QUESTION_TYPES = ("relation",)  # pretrained on, excluded from co-training


@dataclass
class StudyConfig:
    study: str = "ki"
    budget: str = "full"
    seeds: int = 3
    work: Path = Path("runs/study")  # datasets, runs, caches
    report: Path = Path("docs/results")  # <report>/<name>.md, .json and <name>/*.png
    held_out_question_types: tuple[str, ...] = HELD_OUT_QUESTION_TYPES
    variants: tuple[str, ...] = ()  # a subset of the study's variants (default: all)
    progress: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # Budget fields, e.g. {"steps": 100}

    def __post_init__(self) -> None:
        if self.study not in STUDIES:
            raise ValueError(f"StudyConfig.study: expected one of {STUDIES}, got {self.study!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"StudyConfig.budget: expected one of {sorted(BUDGETS)}, got {self.budget!r}")
        if self.seeds < 1:
            raise ValueError(f"StudyConfig.seeds: expected >= 1, got {self.seeds}")
        self.work, self.report = Path(self.work), Path(self.report)
        unknown = [v for v in self.variants if v not in VARIANTS[self.study]]
        if unknown:
            raise ValueError(
                f"StudyConfig.variants: unknown {unknown}; expected some of {list(VARIANTS[self.study])}"
            )
        replace(BUDGETS[self.budget], **self.overrides)  # unknown override fields raise TypeError early

    @property
    def name(self) -> str:
        return f"{self.study}_study"

    def resolved_budget(self) -> Budget:
        budget = replace(BUDGETS[self.budget], **self.overrides)
        return replace(budget, save_every=min(budget.save_every, budget.steps))

    def variant_names(self) -> list[str]:
        return list(self.variants or VARIANTS[self.study])


def budget_tag(name: str, budget: Budget) -> str:
    """`quick-1a2b3c4d`: runs of a changed budget (e.g. --steps) never reuse stale caches."""
    import hashlib

    digest = hashlib.sha1(json.dumps(asdict(budget), sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def _log(config: StudyConfig, message: str) -> None:
    if config.progress:
        print(f"[study {config.study}] {message}", flush=True)


def prepare_data(config: StudyConfig, budget: Budget) -> tuple[Path, Path]:
    """Train and held-out validation datasets (different seeds), generated once."""
    from kivla.data.world_dataset import generate_dataset

    paths = []
    for name, episodes, seed in (("train", budget.train_episodes, 0), ("val", budget.val_episodes, 1)):
        root = config.work / "data" / f"{name}_{budget.image_size}px_{episodes}ep"
        if not (root / "meta" / "info.json").is_file():
            generate_dataset(
                root, episodes, image_size=budget.image_size, seed=seed, video=False, progress=config.progress
            )
        paths.append(root)
    return paths[0], paths[1]


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
    bundle, budget: Budget, val_data: Path, reference_language: dict, final: bool
) -> dict:
    """Flow validation MSE, closed-loop ID/OOD success and follow rate, language metrics and retention."""
    from kivla.eval.baselines import BundlePolicy

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


def run_variant(
    config: StudyConfig,
    budget: Budget,
    name: str,
    seed: int,
    data: tuple[Path, Path],
    pretrained: Path,
    reference_language: dict,
    train_policy: Callable,
) -> dict[str, Any]:
    """Train one (variant, seed) and evaluate each checkpoint; cached in the run directory."""
    from kivla.model.bundle import PolicyBundle
    from kivla.train.config import TrainConfig
    from kivla.train.run import MixtureConfig, RunConfig

    run_dir = config.work / "runs" / config.study / budget_tag(config.budget, budget) / name / f"seed{seed}"
    cache = run_dir / "study_eval.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    variant = VARIANTS[config.study][name]
    mixture = (
        MixtureConfig(exclude_question_types=config.held_out_question_types)
        if variant.language
        else MixtureConfig(robot=1.0, caption=0.0, vqa=0.0, text=0.0)
    )
    train = TrainConfig(
        steps=budget.steps,
        batch_size=budget.batch_size,
        lr=budget.lr,
        seed=seed,
        warmup_steps=min(50, budget.steps // 10),
        save_every=budget.save_every,
        keep_last=1000,
        ema_decay=None,
        log_every=max(1, min(10, budget.steps // 20)),
    )
    start = time.perf_counter()
    outcome = train_policy(
        RunConfig(
            recipe=variant.recipe,
            data=data[0],
            out=run_dir,
            init=pretrained,
            size=budget.size,
            horizon=budget.horizon,
            discrete_target=variant.discrete_target,
            tokenizer_fit_chunks=budget.tokenizer_chunks,
            mixture=mixture,
            train=train,
        ),
        progress=False,
    )
    train_seconds = time.perf_counter() - start
    checkpoints = []
    for i, ckpt in enumerate(outcome.checkpoints):
        bundle = PolicyBundle.load(ckpt)
        final = i == len(outcome.checkpoints) - 1
        record = evaluate_checkpoint(bundle, budget, data[1], reference_language, final)
        checkpoints.append({"step": int(ckpt.name.rsplit("_", 1)[-1]), "path": str(ckpt), **record})
    result = {
        "variant": name,
        "seed": seed,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start - train_seconds,
        "checkpoints": checkpoints,
        "history": [
            {k: v for k, v in r.items() if k == "step" or k.startswith("loss")} for r in outcome.history
        ],
    }
    from kivla.train.atomic import write_json

    write_json(cache, result)
    return result


@single_thread()
def run_gradient_study(config: StudyConfig, budget: Budget, runs: dict, data: tuple[Path, Path]) -> dict:
    """The gradient study (seed 0): naive at its first and last checkpoint, with a FAST tokenizer
    fitted on the training chunks giving CE targets to its (untrained) action-token head; and, when
    the study has it, joint_fast at its last checkpoint (no insulation either, but a trained FAST
    head: the fairer comparison of the two losses)."""
    from kivla.eval.gradients import GradientStudyConfig, gradient_study, robot_batches
    from kivla.model.bundle import PolicyBundle
    from kivla.tokenizers import fit_tokenizer
    from kivla.tokenizers.data import load_chunks

    chunks = load_chunks(data[0], budget.horizon, max_chunks=budget.tokenizer_chunks)
    tokenizer = fit_tokenizer("fast", chunks)
    gconfig = GradientStudyConfig(
        bins=budget.grad_bins, batches=budget.grad_batches, batch_size=budget.grad_batch_size
    )
    naive = runs["naive"][0]["checkpoints"]
    points = [("first", "naive", naive[0]), ("last", "naive", naive[-1])]
    if "joint_fast" in runs:
        points.append(("joint_fast_last", "joint_fast", runs["joint_fast"][0]["checkpoints"][-1]))
    out: dict[str, Any] = {"variant": "naive"}
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
    from kivla.tokenizers.data import load_chunks
    from kivla.tokenizers.evaluate import fit_and_evaluate

    chunks = load_chunks(train_data, budget.horizon, max_chunks=budget.tokenizer_chunks)
    return [r.to_dict() for r in fit_and_evaluate(["fast", "binning", "wavelet", "vq"], chunks)]


def run_study(
    config: StudyConfig, pretrain_backbone: Callable | None = None, train_policy: Callable | None = None
) -> Path:
    """Run (or resume) the study and write its report; returns the markdown path.

    `pretrain_backbone` / `train_policy` default to kivla.train.run's (tests pass small fakes).
    """
    from kivla.eval import report
    from kivla.train.run import MixtureConfig, PretrainConfig

    if pretrain_backbone is None or train_policy is None:
        from kivla.train import run

        pretrain_backbone = pretrain_backbone or run.pretrain_backbone
        train_policy = train_policy or run.train_policy
    budget = config.resolved_budget()
    started = time.perf_counter()
    data = prepare_data(config, budget)
    _log(config, f"data: {data[0]} / {data[1]}")
    pre_out = (
        config.work
        / "pretrain"
        / (f"{budget.size}_{budget.image_size}px_{budget.pretrain_steps}x{budget.pretrain_batch_size}")
    )
    from kivla.train.checkpoint import latest_checkpoint

    pretrained = latest_checkpoint(pre_out / "checkpoints") or pretrain_backbone(
        PretrainConfig(
            out=pre_out,
            steps=budget.pretrain_steps,
            batch_size=budget.pretrain_batch_size,
            seed=0,
            size=budget.size,
            image_size=budget.image_size,
            mixture=MixtureConfig(robot=0.0, caption=0.3, vqa=0.6, text=0.1),
        ),
        progress=False,
    )
    from kivla.model.bundle import PolicyBundle

    vqa, caption, text = budget.language
    reference_language = language_metrics(
        PolicyBundle.load(pretrained), LanguageConfig(num_vqa=vqa, num_caption=caption, num_text=text)
    )
    _log(config, f"pretrained backbone {pretrained}: VQA {reference_language['vqa_accuracy']:.1%}")
    runs: dict[str, list[dict]] = {}
    for name in config.variant_names():
        runs[name] = []
        for seed in range(config.seeds):
            _log(config, f"{name} seed {seed}")
            runs[name].append(
                run_variant(config, budget, name, seed, data, pretrained, reference_language, train_policy)
            )
    gradients = None
    if "naive" in runs:  # the flow gradient reaches the backbone only without insulation
        _log(config, "gradient study")
        gradients = run_gradient_study(config, budget, runs, data)
    tokenizers = tokenizer_table(budget, data[0]) if config.study == "targets" else None
    results = {
        "study": config.study,
        "budget_name": config.budget,
        "budget": asdict(budget),
        "seeds": config.seeds,
        "held_out_question_types": list(config.held_out_question_types),
        "reference_language": reference_language,
        "runs": runs,
        "gradients": gradients,
        "tokenizers": tokenizers,
        "wall_seconds": time.perf_counter() - started,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path = report.write_report(results, config.report, config.name)
    _log(config, f"report: {path}")
    return path
