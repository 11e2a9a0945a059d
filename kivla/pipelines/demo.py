"""`kivla demo` / `make demo`: the main job end to end on the built-in world, with a report.

world data → language pretraining of the VLM → FAST fitted on the robot data → ki co-training →
closed-loop evaluation against the untrained policy (same pretrained backbone, fresh expert) →
language retention against the pretrained backbone → `report.md` with the numbers and plots.
Finished stages are reused (`kivla.pipelines.stages`), so a rerun only redoes what is missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kivla.eval.baselines import BundlePolicy
from kivla.eval.language import LanguageConfig, language_retention
from kivla.eval.rollout import EvalConfig, evaluate
from kivla.eval.validation import ValidationConfig, flow_validation
from kivla.io import write_json
from kivla.model.bundle import PolicyBundle
from kivla.model.presets import PERCEPTIONS, SIZES
from kivla.pipelines.stages import Stages, trained, world_dataset
from kivla.presets import Presets, check_positive
from kivla.train.config import TrainConfig
from kivla.train.run import (
    WORLD_STEM_STEPS,
    PretrainConfig,
    RunConfig,
    build_policy,
    pretrain_backbone,
    train_policy,
)


@dataclass(frozen=True)
class DemoConfig:
    name: str
    episodes: int = 300  # training episodes of the world dataset
    val_episodes: int = 30  # held-out episodes for the flow validation error
    image_size: int = 64
    size: str = "tiny"  # a name in kivla.model.presets.SIZES
    pretrain_steps: int = 600
    pretrain_batch: int = 32
    pretrain_lr: float = 2e-3
    stem_steps: int = WORLD_STEM_STEPS  # the image stem trained alone first (kivla.train.stem)
    # ki steps, the backbone's losses on every 4th (docs/learning.md, sixteenth round: the expert's
    # steps between cost a third of a full step and lift the policy); 2,000 since the seventeenth
    # round's backbone made pretraining and ki steps a little slower
    train_steps: int = 2000
    train_batch: int = 32
    lr: float = 1e-3
    perception: str = "goal_point"  # a name in kivla.model.presets.PERCEPTIONS
    backbone_every: int = 4  # RunConfig.backbone_every: the backbone's losses every N-th ki step
    precision: str = "auto"
    eval_episodes: int = 48  # per split (train, ood), spread over the task families
    language_questions: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        SIZES.get(self.size, "DemoConfig.size")  # an unknown name raises, naming the nearest
        PERCEPTIONS.get(self.perception, "DemoConfig.perception")
        check_positive(self, except_fields=("seed",))

    def values(self) -> dict[str, Any]:
        """The budget's numbers (what results.json records as `config`)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


DEMOS: Presets[DemoConfig] = Presets("demo", [
    # `make demo`: ~18 minutes on 2 CPU cores (docs/results/demo.json).
    DemoConfig("demo"),
    # `kivla demo --quick`: a smoke run of every stage in a few minutes; the numbers mean nothing.
    DemoConfig("quick", episodes=20, val_episodes=4, size="test", pretrain_steps=20, pretrain_batch=8,
               train_steps=30, train_batch=8, lr=1e-3, eval_episodes=8, language_questions=40, stem_steps=40),
])  # fmt: skip


def run_demo_pipeline(out: str | Path, config: DemoConfig | None = None) -> Path:
    """Run every stage into `out` and return the path of `report.md`."""
    config = config or DEMOS["demo"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages("demo")
    data, val = out / "data", out / "val"
    with stages.stage("generate world data"):
        world_dataset(data, config.episodes, config.image_size, config.seed, video=True, progress=True)
        world_dataset(
            val, config.val_episodes, config.image_size, config.seed + 1, video=True, progress=False
        )

    pretrain = PretrainConfig(
        out=out / "pretrain", steps=config.pretrain_steps, batch_size=config.pretrain_batch,
        lr=config.pretrain_lr, seed=config.seed, size=config.size, image_size=config.image_size,
        stem_steps=config.stem_steps,
    )  # fmt: skip
    with stages.stage("pretrain the VLM on captions and VQA"):
        pretrained = trained(pretrain.out, pretrain.steps, lambda: pretrain_backbone(pretrain))

    train = TrainConfig(steps=config.train_steps, batch_size=config.train_batch, lr=config.lr,
                        warmup_steps=max(1, config.train_steps // 20), save_every=config.train_steps,
                        keep_last=1, seed=config.seed, precision=config.precision,
                        log_every=max(1, config.train_steps // 50))  # fmt: skip
    run = RunConfig(recipe="ki", data=data, out=out / "ki", init=pretrained, size=config.size,
                    perception=config.perception, backbone_every=config.backbone_every,
                    train=train)  # fmt: skip
    with stages.stage("fit FAST and co-train the ki recipe"):
        ki = trained(run.out, train.steps, lambda: train_policy(run).checkpoints[-1])

    trained_bundle = PolicyBundle.load(ki)
    untrained_bundle, _ = build_policy(dataclasses.replace(run, out=out / "untrained"))
    reference = PolicyBundle.load(pretrained)
    evals: dict[str, Any] = {}
    with stages.stage("closed-loop evaluation (trained vs untrained)"):
        eval_config = EvalConfig(
            episodes=config.eval_episodes, image_size=config.image_size, seed=config.seed
        )
        for name, bundle in (("ki", trained_bundle), ("untrained", untrained_bundle)):
            result = evaluate(BundlePolicy(bundle, seed=config.seed), eval_config, out / "eval" / name)
            evals[name] = result.summary()
    with stages.stage("language retention and flow validation"):
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
        "config": config.values(),
        "timings_s": stages.timings,
        "closed_loop": evals,
        "language": language,
        "flow_validation": validation,
        "checkpoints": {"pretrained": str(pretrained), "ki": str(ki)},
    }
    write_json(out / "results.json", results)
    from kivla.pipelines.demo_report import write_demo_report

    return write_demo_report(out, results)
