"""Assemble a run: data, tokenizers, policy and trainer, for language pretraining and robot co-training.

`pretrain_backbone` trains the built-in VLM on the world's captions / VQA / text so that it has
language priors to keep; `train_policy` co-trains a recipe on a mixture of robot chunks and
language examples, starting from such a backbone (`init`) or from scratch. Both write checkpoints
that are complete policy bundles (`kivla.model.bundle`). The pieces: the mixture and its batch
function (`kivla.train.mixture`), the tokenizers a run fits (`kivla.train.fitting`), the policy
assembly (`kivla.model.assemble`), the loop (`kivla.train.loop`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kivla.data.lerobot_format import ACTION_KEY, STATE_KEY
from kivla.data.mixture import MixtureSampler
from kivla.data.normalize import QuantileNormalizer
from kivla.data.world_scene import NUM_LABELS
from kivla.io import write_json
from kivla.model.assemble import assemble_bundle, policy_config
from kivla.model.batch import BatchBuilder
from kivla.model.bundle import PolicyBundle
from kivla.model.presets import PERCEPTIONS, RECIPES, SIZES
from kivla.train.align import (
    BACKBONES,
    VISIONS,
    alignment_config,
    freeze_language_model,
    real_arch,
    real_vocabulary,
)
from kivla.train.checkpoint import latest_checkpoint, list_checkpoints
from kivla.train.config import TrainConfig
from kivla.train.distributed import DistContext, init_distributed
from kivla.train.fitting import (
    MAX_PROMPT_LEN,
    MAX_SUFFIX_LEN,
    fit_action_tokenizer,
    fit_text_tokenizer,
    vocab_layout,
)
from kivla.train.loop import Trainer
from kivla.train.metrics import read_metrics
from kivla.train.mixture import PRETRAIN_MIXTURE, MixtureBatches, MixtureConfig
from kivla.train.stem import StemPretrainConfig, pretrain_stem

# The dense vision losses of language pretraining (docs/learning.md): each object's image token
# names it through the tied LM head, and after layer 1 tokens mark the objects a question refers to.
WORLD_VISION_LOSSES: dict[str, Any] = dict(
    vision_weight=1.0, vision_labels=NUM_LABELS, vision_readout="words", refer_weight=1.0, refer_layer=1
)
# The built-in VLM's naming attention (kivla.model.naming, docs/learning.md thirteenth round): an
# object head names the world's label classes at each image token, the words of a prompt look at
# the objects they name and the answer at the objects the prompt names; image positions start as
# 2D sine-cosines. Seventeenth round: each looking word carries where it looks and how many of what
# it names the image holds, the answer the same of the prompt's two names, image tokens their offset
# from the first name, and one head of the answer a learned score for objects near it
# (naming_where / count / relative / near); the answer of "which object is nearest the gripper?"
# looks at that object (naming_nearest). Its stem is first trained alone on the world's object
# labels (33 s in the demo).
WORLD_NAMING: dict[str, Any] = dict(
    naming_labels=NUM_LABELS, image_pos_init="sincos", naming_where=True, naming_count=True,
    naming_relative=True, naming_near=True, naming_nearest=True,
)  # fmt: skip
WORLD_STEM_STEPS = 1500
PRETRAIN_HORIZON = 50  # the expert's shape in a pretrained bundle (robot training replaces the expert)


def _check_backbone(owner: str, backbone: str, vision: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"{owner}.backbone: expected one of {BACKBONES}, got {backbone!r}")
    if vision not in VISIONS:
        raise ValueError(f"{owner}.vision: expected one of {VISIONS}, got {vision!r}")


def _check_common(owner: str, size: str, mixture: Any) -> None:
    SIZES.get(size, f"{owner}.size")  # an unknown size raises, naming the nearest
    if not isinstance(mixture, MixtureConfig):
        raise ValueError(f"{owner}.mixture: expected a MixtureConfig, got {type(mixture).__name__}")


@dataclass(frozen=True)
class RunConfig:
    """A co-training run: recipe, data, starting point, size and the optimization (`train`)."""

    recipe: str = "ki"
    data: Path | str | None = None  # LeRobot v3 dataset directory
    out: Path | str = "runs/train"
    init: Path | str | None = None  # a pretrained bundle / checkpoint: its backbone and text tokenizer
    size: str = "tiny"  # a name in kivla.model.presets.SIZES
    backbone: str = "tiny"  # "smollm2": the real SmolLM2-135M (kivla.train.align), `size` unused
    vision: str = "efficientnet"  # smollm2's image tokens: "efficientnet" (Lite0) or "conv"
    horizon: int = 50
    discrete_target: str | None = None  # override the recipe's target (fast | binning | wavelet | vq | none)
    action_tokenizer: Path | str | None = None  # a fitted tokenizer directory instead of fitting one
    tokenizer_fit_chunks: int = 4000  # chunks sampled from the data to fit the tokenizer
    perception: str = "prefix"  # a name in kivla.model.presets.PERCEPTIONS
    policy_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"fast_weight": 0.5}
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # N > 1: the backbone's losses (FAST, language, dense vision) on every N-th step only; the steps
    # between draw robot examples and train the expert alone (flow, keypoints), which costs an
    # insulated recipe a forward pass of the backbone without a graph (docs/learning.md).
    backbone_every: int = 1

    def __post_init__(self) -> None:
        RECIPES.get(self.recipe, "RunConfig.recipe")
        PERCEPTIONS.get(self.perception, "RunConfig.perception")
        _check_common("RunConfig", self.size, self.mixture)
        _check_backbone("RunConfig", self.backbone, self.vision)
        if self.horizon < 1:
            raise ValueError(f"RunConfig.horizon: expected >= 1, got {self.horizon}")
        if self.backbone_every < 1:
            raise ValueError(f"RunConfig.backbone_every: expected >= 1, got {self.backbone_every}")
        if self.tokenizer_fit_chunks < 1:
            raise ValueError(
                f"RunConfig.tokenizer_fit_chunks: expected >= 1, got {self.tokenizer_fit_chunks}"
            )
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"RunConfig.train: expected a TrainConfig, got {type(self.train).__name__}")
        if self.backbone_every > 1 and self.train.strategy == "fsdp":
            # Under FSDP a parameter with no gradient on this step is not guaranteed to be left
            # untouched by the optimizer; DDP leaves it as one process does (run_distributed_test).
            raise ValueError(
                "RunConfig.backbone_every: expert steps are supported with strategy ddp only, got fsdp; "
                "use --strategy ddp or --backbone-every 1"
            )
        if self.mixture.robot > 0 and self.data is None:
            raise ValueError("RunConfig.data: a LeRobot dataset directory is required when mixture.robot > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


@dataclass(frozen=True)
class PretrainConfig:
    """Language pretraining of the built-in VLM (the `pretrain` recipe, no robot data)."""

    out: Path | str = "runs/pretrain"
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    size: str = "tiny"  # a name in kivla.model.presets.SIZES
    backbone: str = "tiny"  # "smollm2": vision alignment of the frozen real LM (kivla.train.align)
    vision: str = "efficientnet"
    image_size: int = 64
    mixture: MixtureConfig = PRETRAIN_MIXTURE
    policy_overrides: dict[str, Any] = field(
        default_factory=lambda: dict(WORLD_VISION_LOSSES)
    )  # KIPolicyConfig fields
    backbone_overrides: dict[str, Any] = field(
        default_factory=lambda: dict(WORLD_NAMING)
    )  # BackboneConfig fields of the tiny VLM
    save_every: int | None = None  # default: only the final step
    precision: str = "auto"  # TrainConfig.precision
    # Steps of vision pretraining of the built-in VLM's image stem on the world's object labels
    # before language pretraining (kivla.train.stem); 0: none. The demo and `kivla pretrain` use
    # WORLD_STEM_STEPS.
    stem_steps: int = 0

    def __post_init__(self) -> None:
        _check_common("PretrainConfig", self.size, self.mixture)
        _check_backbone("PretrainConfig", self.backbone, self.vision)
        for name in ("steps", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"PretrainConfig.lr: expected > 0, got {self.lr}")
        if self.save_every is not None and self.save_every < 1:
            raise ValueError(f"PretrainConfig.save_every: expected >= 1 or None, got {self.save_every}")
        if self.stem_steps < 0:
            raise ValueError(f"PretrainConfig.stem_steps: expected >= 0, got {self.stem_steps}")
        if self.stem_steps and self.backbone != "tiny":
            raise ValueError(
                f"PretrainConfig.stem_steps: stem pretraining is for the built-in tiny VLM, got "
                f"backbone {self.backbone!r}"
            )
        if self.mixture.robot != 0:
            raise ValueError(
                f"PretrainConfig.mixture: pretraining has no robot data, got robot={self.mixture.robot}"
            )

    def train_config(self) -> TrainConfig:
        """The optimization of a pretraining run: warmup 10% (at most 50 steps), no EMA."""
        steps = self.steps
        return TrainConfig(steps=steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           warmup_steps=min(50, steps // 10), save_every=self.save_every or steps,
                           keep_last=1 if self.save_every is None else 100, precision=self.precision,
                           ema_decay=None, log_every=max(1, min(10, steps // 20)))  # fmt: skip


@dataclass
class RunOutcome:
    run_dir: Path
    checkpoints: list[Path]  # bundle directories, oldest first
    history: list[dict[str, Any]]  # metrics.jsonl records


def _run_trainer(
    bundle: PolicyBundle,
    batches: MixtureBatches,
    train: TrainConfig,
    out: Path,
    run_json: dict[str, Any],
    progress: bool,
    resume: bool,
    ctx: DistContext | None,
) -> RunOutcome:
    ctx = ctx or init_distributed()
    if ctx.is_main:
        write_json(out / "run.json", run_json)
    trainer = Trainer(
        bundle.policy,
        train,
        batches,
        out,
        ctx=ctx,
        write_extra=lambda d: bundle.write_files(d, weights=False),
        progress=progress,
    )
    trainer.fit(resume=resume)
    ctx.barrier()
    metrics = out / "metrics.jsonl"
    history = read_metrics(metrics) if metrics.is_file() else []
    return RunOutcome(run_dir=out, checkpoints=list_checkpoints(out / "checkpoints"), history=history)


# -- entry points ----------------------------------------------------------------------------------
def pretrain_backbone(
    config: PretrainConfig, progress: bool = True, resume: bool = False, ctx: DistContext | None = None
) -> Path:
    """Language pretraining of the built-in VLM; returns the final checkpoint (a policy bundle).
    A real backbone (`config.backbone`) gets its vision-alignment stage instead: the same run on
    its own vocabulary, with the language model frozen (`kivla.train.align`)."""
    from kivla.data.world_env import ACTION_DIM, STATE_DIM

    out = Path(config.out)
    record = {"pretrain": {**dataclasses.asdict(config), "out": str(out)}}
    if config.backbone != "tiny":
        text, layout = real_vocabulary(config.backbone)
        policy_cfg, recipe = alignment_config(config), "align"
        record["pretrain"]["stage"] = "vision alignment"
    else:
        text = fit_text_tokenizer()
        layout = vocab_layout(text)
        policy_cfg = policy_config(
            config.size, "pretrain", image_size=config.image_size, vocab_size=layout.vocab_size,
            horizon=PRETRAIN_HORIZON, action_dim=ACTION_DIM, state_dim=STATE_DIM,
            backbone_overrides=config.backbone_overrides, **config.policy_overrides,
        )  # fmt: skip
        recipe = "pretrain"
    builder = BatchBuilder(text, None, image_size=config.image_size, horizon=PRETRAIN_HORIZON,
                           action_dim=ACTION_DIM, state_dim=STATE_DIM, max_prompt_len=MAX_PROMPT_LEN,
                           max_suffix_len=MAX_SUFFIX_LEN, layout=layout)  # fmt: skip
    bundle = assemble_bundle(policy_cfg, builder, None, recipe, seed=config.seed)
    if recipe == "align":
        freeze_language_model(bundle.policy)
    if config.stem_steps and not (resume and latest_checkpoint(out / "checkpoints")):
        stem = StemPretrainConfig(steps=config.stem_steps, seed=config.seed)
        record["pretrain"]["stem_result"] = pretrain_stem(bundle.policy.backbone, stem, progress)
    sampler = MixtureSampler(None, config.mixture.weights(), config.seed, image_size=config.image_size,
                             exclude_question_types=config.mixture.exclude_question_types)  # fmt: skip
    batches = MixtureBatches(builder, sampler, config.seed)
    outcome = _run_trainer(bundle, batches, config.train_config(), out, record, progress, resume, ctx)
    return outcome.checkpoints[-1]


def build_policy(config: RunConfig, resume: bool = False) -> tuple[PolicyBundle, MixtureBatches]:
    """The bundle a run starts from (backbone from `init`, fresh expert, fitted action tokenizer)
    and its batch function. With `resume`, the vocabulary and tokenizer of the newest checkpoint.
    The dataset is opened once: its stats, shapes, chunks and frames all come from that handle."""
    from kivla.data.lerobot_read import LeRobotDataset

    out = Path(config.out)
    dataset = LeRobotDataset(config.data, horizon=config.horizon)
    normalizer = QuantileNormalizer.from_stats(dataset.stats, (ACTION_KEY, STATE_KEY))
    image_size = dataset.info["features"][dataset.image_key]["shape"][0] if dataset.image_key else 64
    start, saved_tokenizer = config.init, config.action_tokenizer
    if resume:
        # The newest checkpoint fixes the vocabulary and the action tokenizer; the trainer then
        # restores its weights, optimizer and schedule.
        start = latest_checkpoint(out / "checkpoints")
        if start is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {out / 'checkpoints'}")
        if (start / "action_tokenizer").is_dir():
            saved_tokenizer = start / "action_tokenizer"
    base = PolicyBundle.load(start, weights="model") if start is not None else None
    if base is not None:
        text, layout = base.builder.text, base.builder.layout
    elif config.backbone != "tiny":
        text, layout = real_vocabulary(config.backbone)
    else:
        text = fit_text_tokenizer(sorted(set(dataset.tasks.values())))
        layout = vocab_layout(text)
    overrides = PERCEPTIONS[config.perception].overrides(config.policy_overrides)
    if config.discrete_target is not None:
        overrides["discrete_target"] = config.discrete_target
    real = base.config.backbone.kind if base is not None else config.backbone
    if real != "tiny":  # a real LM's architecture, the recipe on top
        shapes = (image_size, config.horizon, dataset.action_dim, dataset.state_dim)
        arch = real_arch(real, config.vision, *shapes)
        if base is not None:
            arch = dataclasses.replace(arch, backbone=base.config.backbone)
        policy_cfg = RECIPES[config.recipe].apply(arch, **overrides)
    else:
        policy_cfg = policy_config(
            config.size, config.recipe, image_size=image_size, vocab_size=layout.vocab_size,
            horizon=config.horizon, action_dim=dataset.action_dim, state_dim=dataset.state_dim,
            backbone=base.config.backbone if base is not None else None, **overrides,
        )  # fmt: skip
    tokenizer, action_tokens = (None, 0)
    if policy_cfg.uses_discrete_loss:
        tokenizer, action_tokens = fit_action_tokenizer(
            policy_cfg.discrete_target, dataset, normalizer, config.tokenizer_fit_chunks, saved_tokenizer
        )
    builder = BatchBuilder(text, tokenizer, image_size=image_size, horizon=config.horizon,
                           action_dim=dataset.action_dim, state_dim=dataset.state_dim,
                           state_input=policy_cfg.state_input, max_prompt_len=MAX_PROMPT_LEN,
                           max_suffix_len=max(MAX_SUFFIX_LEN, action_tokens), layout=layout)  # fmt: skip
    bundle = assemble_bundle(policy_cfg, builder, normalizer, config.recipe, config.train.seed, init=base)
    sampler = MixtureSampler(dataset, config.mixture.weights(), config.train.seed, normalizer,
                             config.mixture.exclude_question_types, image_size)  # fmt: skip
    batches = MixtureBatches(builder, sampler, config.train.seed, policy_cfg.flow_samples_per_example,
                             config.train.grad_accum, config.backbone_every)  # fmt: skip
    return bundle, batches


def train_policy(
    config: RunConfig, progress: bool = True, resume: bool = False, ctx: DistContext | None = None
) -> RunOutcome:
    """Co-train `config.recipe` on the dataset + language mixture; checkpoints are policy bundles."""
    bundle, batches = build_policy(config, resume)
    run_json = {"run": config.to_dict()}
    return _run_trainer(bundle, batches, config.train, Path(config.out), run_json, progress, resume, ctx)


def load_run_config(path: Path | str) -> RunConfig:
    """The RunConfig a run directory was started with (its run.json)."""
    d = json.loads(Path(path).read_text())["run"]
    d["mixture"] = MixtureConfig(**d["mixture"])
    d["train"] = TrainConfig.from_dict(d["train"])
    return RunConfig(**d)
