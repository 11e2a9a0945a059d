"""`kivla demo` / `make demo`: the main job end to end on the built-in world, with a report.

world data → language pretraining of the VLM → FAST fitted on the robot data → ki co-training →
closed-loop evaluation against the untrained policy (same pretrained backbone, fresh expert) →
language retention against the pretrained backbone → `report.md` with the numbers and plots.
Stages whose outputs already exist are reused, so a rerun only redoes what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kivla.train.atomic import write_json
from kivla.train.checkpoint import latest_checkpoint


@dataclass(frozen=True)
class DemoConfig:
    episodes: int = 300  # training episodes of the world dataset
    val_episodes: int = 30  # held-out episodes for the flow validation error
    image_size: int = 64
    size: str = "tiny"
    pretrain_steps: int = 600
    pretrain_batch: int = 32
    pretrain_lr: float = 2e-3
    train_steps: int = 700
    train_batch: int = 32
    lr: float = 5e-4
    precision: str = "auto"
    eval_episodes: int = 48  # per split (train, ood), spread over the task families
    language_questions: int = 300
    seed: int = 0


DEMO = DemoConfig()
QUICK = DemoConfig(episodes=20, val_episodes=4, size="test", pretrain_steps=20, pretrain_batch=8,
                   train_steps=30, train_batch=8, lr=1e-3, eval_episodes=8,
                   language_questions=40)  # fmt: skip


def _stage(name: str, timings: dict[str, float]):
    class Timer:
        def __enter__(self):
            print(f"[demo] {name} ...", flush=True)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = time.perf_counter() - self.start
            print(f"[demo] {name}: {timings[name]:.0f} s", flush=True)

    return Timer()


def _finished(run_dir: Path, steps: int) -> Path | None:
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    return ckpt if ckpt is not None and ckpt.name == f"step_{steps:08d}" else None


def run_demo_pipeline(out: str | Path, config: DemoConfig = DEMO) -> Path:
    """Run every stage into `out` and return the path of `report.md`."""
    from kivla.data.world_dataset import generate_dataset
    from kivla.eval.baselines import BundlePolicy
    from kivla.eval.language import LanguageConfig, language_retention
    from kivla.eval.rollout import EvalConfig, evaluate
    from kivla.eval.validation import ValidationConfig, flow_validation
    from kivla.model.bundle import PolicyBundle
    from kivla.train.config import TrainConfig
    from kivla.train.run import PretrainConfig, RunConfig, build_policy, pretrain_backbone, train_policy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    data, val = out / "data", out / "val"
    with _stage("generate world data", timings):
        if not (data / "meta" / "info.json").is_file():
            generate_dataset(data, config.episodes, config.image_size, seed=config.seed)
        if not (val / "meta" / "info.json").is_file():
            generate_dataset(
                val, config.val_episodes, config.image_size, seed=config.seed + 1, progress=False
            )

    with _stage("pretrain the VLM on captions and VQA", timings):
        pretrained = _finished(out / "pretrain", config.pretrain_steps)
        if pretrained is None:
            pretrain = PretrainConfig(
                out=out / "pretrain", steps=config.pretrain_steps, batch_size=config.pretrain_batch,
                lr=config.pretrain_lr, seed=config.seed, size=config.size, image_size=config.image_size,
            )  # fmt: skip
            pretrained = pretrain_backbone(pretrain)

    train = TrainConfig(steps=config.train_steps, batch_size=config.train_batch, lr=config.lr,
                        warmup_steps=max(1, config.train_steps // 20), save_every=config.train_steps,
                        keep_last=1, seed=config.seed, precision=config.precision,
                        log_every=max(1, config.train_steps // 50))  # fmt: skip
    run = RunConfig(recipe="ki", data=data, out=out / "ki", init=pretrained, size=config.size, train=train)
    with _stage("fit FAST and co-train the ki recipe", timings):
        trained = _finished(out / "ki", config.train_steps)
        if trained is None:
            trained = train_policy(run).checkpoints[-1]

    trained_bundle = PolicyBundle.load(trained)
    untrained_bundle, _ = build_policy(dataclasses.replace(run, out=out / "untrained"))
    reference = PolicyBundle.load(pretrained)
    evals: dict[str, Any] = {}
    with _stage("closed-loop evaluation (trained vs untrained)", timings):
        eval_config = EvalConfig(
            episodes=config.eval_episodes, image_size=config.image_size, seed=config.seed
        )
        for name, bundle in (("ki", trained_bundle), ("untrained", untrained_bundle)):
            result = evaluate(BundlePolicy(bundle, seed=config.seed), eval_config, out / "eval" / name)
            evals[name] = result.summary()
    with _stage("language retention and flow validation", timings):
        language = language_retention(
            trained_bundle, reference, LanguageConfig(num_vqa=config.language_questions,
                                                      num_caption=config.language_questions // 3,
                                                      num_text=config.language_questions // 3)
        )  # fmt: skip
        validation = {
            name: flow_validation(bundle, val, ValidationConfig(num_frames=256, seed=config.seed))
            for name, bundle in (("ki", trained_bundle), ("untrained", untrained_bundle))
        }
    results = {
        "config": dataclasses.asdict(config),
        "timings_s": timings,
        "closed_loop": evals,
        "language": language,
        "flow_validation": validation,
        "checkpoints": {"pretrained": str(pretrained), "ki": str(trained)},
    }
    write_json(out / "results.json", results)
    from kivla.train.report import write_demo_report

    return write_demo_report(out, results)


def load_results(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / "results.json").read_text())
