"""`kivla study ki` and `kivla study targets`: train every variant with N seeds, evaluate every checkpoint.

One study = data (a train and a held-out validation dataset from the world's generator) + one
language-pretrained backbone (the language reference) + for each variant and seed a co-training
run at the same budget. Every saved checkpoint is evaluated (`kivla.pipelines.study_eval`): flow
validation MSE on the held-out dataset, closed-loop success and follow rate on the train (ID) and
OOD splits, and VQA / caption metrics on held-out scenes against the pretrained reference. A
gradient study runs on the variants without insulation. Results go to `<report>/<name>.json`,
`<report>/<name>.md` and PNGs in `<report>/<name>/`.

Finished stages are reused (`kivla.pipelines.stages`): a finished run (its `study_eval.json`) is
not trained or evaluated again, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kivla.eval.language import LanguageConfig, language_metrics
from kivla.model.bundle import PolicyBundle
from kivla.pipelines.budgets import BUDGETS, STUDIES, Budget
from kivla.pipelines.stages import Stages, cached_json, trained, world_dataset
from kivla.pipelines.study_eval import evaluate_checkpoint, run_gradient_study, tokenizer_table
from kivla.train.config import TrainConfig
from kivla.train.mixture import MixtureConfig
from kivla.train.run import PretrainConfig, RunConfig

HELD_OUT_QUESTION_TYPES = ("relation",)  # pretrained on, excluded from co-training


@dataclass(frozen=True)
class StudyConfig:
    study: str = "ki"  # a name in kivla.pipelines.budgets.STUDIES
    budget: str = "full"  # a name in kivla.pipelines.budgets.BUDGETS
    seeds: int = 3
    work: Path = Path("runs/study")  # datasets, runs, caches
    report: Path = Path("docs/results")  # <report>/<name>.md, .json and <name>/*.png
    held_out_question_types: tuple[str, ...] = HELD_OUT_QUESTION_TYPES
    variants: tuple[str, ...] = ()  # a subset of the study's variants (default: all)
    progress: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # Budget fields, e.g. {"steps": 100}

    def __post_init__(self) -> None:
        study = STUDIES.get(self.study, "StudyConfig.study")
        budget = BUDGETS.get(self.budget, "StudyConfig.budget")
        if self.seeds < 1:
            raise ValueError(f"StudyConfig.seeds: expected >= 1, got {self.seeds}")
        object.__setattr__(self, "work", Path(self.work))
        object.__setattr__(self, "report", Path(self.report))
        object.__setattr__(self, "variants", tuple(self.variants))
        unknown = [v for v in self.variants if v not in study.variants]
        if unknown:
            raise ValueError(
                f"StudyConfig.variants: unknown {unknown}; expected some of {list(study.variants.names())}"
            )
        replace(budget, **self.overrides)  # unknown override fields raise TypeError early

    @property
    def name(self) -> str:
        return f"{self.study}_study"

    def resolved_budget(self) -> Budget:
        budget = replace(BUDGETS[self.budget], **self.overrides)
        return replace(budget, save_every=min(budget.save_every, budget.steps))

    def variant_names(self) -> list[str]:
        return list(self.variants or STUDIES[self.study].variants.names())


def budget_tag(name: str, budget: Budget) -> str:
    """`quick-1a2b3c4d`: runs of a changed budget (e.g. --steps) never reuse stale caches."""
    digest = hashlib.sha1(json.dumps(budget.values(), sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def prepare_data(config: StudyConfig, budget: Budget) -> tuple[Path, Path]:
    """Train and held-out validation datasets (different seeds), generated once."""
    paths = []
    for name, episodes, seed in (("train", budget.train_episodes, 0), ("val", budget.val_episodes, 1)):
        root = config.work / "data" / f"{name}_{budget.image_size}px_{episodes}ep"
        paths.append(
            world_dataset(root, episodes, budget.image_size, seed, video=False, progress=config.progress)
        )
    return paths[0], paths[1]


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
    run_dir = config.work / "runs" / config.study / budget_tag(config.budget, budget) / name / f"seed{seed}"
    variant = STUDIES[config.study].variants[name]

    def train_and_evaluate() -> dict[str, Any]:
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
        return {
            "variant": name,
            "seed": seed,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start - train_seconds,
            "checkpoints": checkpoints,
            "history": [
                {k: v for k, v in r.items() if k == "step" or k.startswith("loss")} for r in outcome.history
            ],
        }

    return cached_json(run_dir / "study_eval.json", train_and_evaluate)


def run_study(
    config: StudyConfig, pretrain_backbone: Callable | None = None, train_policy: Callable | None = None
) -> Path:
    """Run (or resume) the study and write its report; returns the markdown path.

    `pretrain_backbone` / `train_policy` default to kivla.train.run's (tests pass small fakes).
    """
    from kivla.pipelines import study_report
    from kivla.train import run

    pretrain_backbone = pretrain_backbone or run.pretrain_backbone
    train_policy = train_policy or run.train_policy
    stages = Stages(f"study {config.study}", config.progress)
    budget = config.resolved_budget()
    started = time.perf_counter()
    data = prepare_data(config, budget)
    stages.log(f"data: {data[0]} / {data[1]}")
    pretrain = PretrainConfig(
        out=config.work / "pretrain" / f"{budget.size}_{budget.image_size}px_{budget.pretrain_steps}x"
        f"{budget.pretrain_batch_size}",
        steps=budget.pretrain_steps,
        batch_size=budget.pretrain_batch_size,
        seed=0,
        size=budget.size,
        image_size=budget.image_size,
    )
    pretrained = trained(pretrain.out, pretrain.steps, lambda: pretrain_backbone(pretrain, progress=False))
    vqa, caption, text = budget.language
    reference_language = language_metrics(
        PolicyBundle.load(pretrained), LanguageConfig(num_vqa=vqa, num_caption=caption, num_text=text)
    )
    stages.log(f"pretrained backbone {pretrained}: VQA {reference_language['vqa_accuracy']:.1%}")
    runs: dict[str, list[dict]] = {}
    for name in config.variant_names():
        runs[name] = []
        for seed in range(config.seeds):
            stages.log(f"{name} seed {seed}")
            runs[name].append(
                run_variant(config, budget, name, seed, data, pretrained, reference_language, train_policy)
            )
    variants = {name: STUDIES[config.study].variants[name] for name in runs}
    gradients = None
    if any(not v.recipe_preset.insulate and not v.uses_discrete_loss for v in variants.values()):
        stages.log("gradient study")  # the flow gradient reaches the backbone only without insulation
        gradients = run_gradient_study(budget, runs, variants, data)
    tokenizers = tokenizer_table(budget, data[0]) if config.study == "targets" else None
    results = {
        "study": config.study,
        "budget_name": config.budget,
        "budget": budget.values(),
        "seeds": config.seeds,
        "held_out_question_types": list(config.held_out_question_types),
        "reference_language": reference_language,
        "runs": runs,
        "gradients": gradients,
        "tokenizers": tokenizers,
        "wall_seconds": time.perf_counter() - started,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path = study_report.write_report(results, config.report, config.name)
    stages.log(f"report: {path}")
    return path
