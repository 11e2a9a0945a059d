"""Assemble a run: data, tokenizers, policy and trainer, for language pretraining and robot co-training.

`pretrain_backbone` trains the built-in VLM on the world's captions / VQA / text so that it has
language priors to keep; `train_policy` co-trains a recipe on a mixture of robot chunks and
language examples, starting from such a backbone (`init`) or from scratch. Both write checkpoints
that are complete policy bundles (`kivla.model.bundle`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kivla.data.language import corpus_words
from kivla.data.mixture import SOURCES, MixtureSampler
from kivla.data.normalize import QuantileNormalizer
from kivla.model import flow
from kivla.model.batch import STATE_BINS, BatchBuilder, KIBatch, VocabLayout
from kivla.model.bundle import ACTION_KEY, STATE_KEY, PolicyBundle
from kivla.model.config import BackboneConfig, ExpertConfig, KIPolicyConfig, recipe_config
from kivla.model.policy import KIPolicy
from kivla.model.text import TextTokenizer
from kivla.tokenizers import ActionTokenizer
from kivla.train.align import BACKBONES, real_arch, real_vocabulary
from kivla.train.atomic import write_json
from kivla.train.checkpoint import latest_checkpoint, list_checkpoints
from kivla.train.config import TrainConfig
from kivla.train.distributed import DistContext, init_distributed
from kivla.train.loop import Trainer
from kivla.train.metrics import read_metrics

SIZES = ("tiny", "test")
# How the tiny VLM reads the world's images (docs/learning.md): a conv stem, pixels centred on the
# table colour, image tokens entering the residual stream at RMS 0.05.
WORLD_IMAGE_INPUT: dict[str, Any] = dict(
    stem="conv",
    image_mean=(205 / 255, 195 / 255, 175 / 255),
    image_std=(0.25, 0.25, 0.25),
    image_token_rms=0.05,
)
# The dense vision losses of language pretraining (docs/learning.md): each object's image token
# names it through the tied LM head, and after layer 1 tokens mark the objects a question refers to.
WORLD_VISION_LOSSES: dict[str, Any] = dict(
    vision_weight=1.0, vision_labels=20, vision_readout="words", refer_weight=1.0, refer_layer=1
)
ACTION_VOCAB_RESERVED = 1024  # ids kept at the end of the vocabulary for any discrete action target
MAX_PROMPT_LEN, MAX_SUFFIX_LEN = 48, 72  # the suffix grows to fit the longest action encoding


@dataclass
class MixtureConfig:
    """Share of each source in a batch (normalized), and VQA question types kept out of training."""

    robot: float = 0.7
    caption: float = 0.1
    vqa: float = 0.15
    text: float = 0.05
    exclude_question_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        weights = self.weights()
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(
                f"MixtureConfig: expected non-negative ratios with a positive sum, got {weights}"
            )
        self.exclude_question_types = tuple(self.exclude_question_types)

    def weights(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in SOURCES}


@dataclass
class RunConfig:
    recipe: str = "ki"
    data: Path | str | None = None  # LeRobot v3 dataset directory
    out: Path | str = "runs/train"
    init: Path | str | None = None  # a pretrained bundle / checkpoint: its backbone and text tokenizer
    size: str = "tiny"  # tiny: the default 5M-parameter policy; test: a very small one for tests
    backbone: str = "tiny"  # "smollm2": the real SmolLM2-135M (kivla.train.align), `size` unused
    vision: str = "efficientnet"  # smollm2's image tokens: "efficientnet" (Lite0) or "conv"
    horizon: int = 50
    discrete_target: str | None = None  # override the recipe's target (fast | binning | wavelet | vq | none)
    action_tokenizer: Path | str | None = None  # a fitted tokenizer directory instead of fitting one
    tokenizer_fit_chunks: int = 4000  # chunks sampled from the data to fit the tokenizer
    policy_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"fast_weight": 0.5}
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"RunConfig.size: expected one of {SIZES}, got {self.size!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"RunConfig.backbone: expected one of {BACKBONES}, got {self.backbone!r}")
        if self.horizon < 1:
            raise ValueError(f"RunConfig.horizon: expected >= 1, got {self.horizon}")
        if self.mixture.robot > 0 and self.data is None:
            raise ValueError("RunConfig.data: a LeRobot dataset directory is required when mixture.robot > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


@dataclass
class PretrainConfig:
    out: Path | str = "runs/pretrain"
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    size: str = "tiny"
    backbone: str = "tiny"  # "smollm2": vision alignment of the frozen real LM (kivla.train.align)
    vision: str = "efficientnet"
    image_size: int = 64
    mixture: MixtureConfig = field(
        default_factory=lambda: MixtureConfig(robot=0.0, caption=0.3, vqa=0.6, text=0.1)
    )
    policy_overrides: dict[str, Any] = field(
        default_factory=lambda: dict(WORLD_VISION_LOSSES)
    )  # KIPolicyConfig
    backbone_overrides: dict[str, Any] = field(default_factory=dict)  # BackboneConfig fields
    save_every: int | None = None  # default: only the final step
    precision: str = "auto"  # TrainConfig.precision ("bf16": autocast, ~15% faster for SmolLM2 on CPU)


@dataclass
class RunOutcome:
    run_dir: Path
    checkpoints: list[Path]  # bundle directories, oldest first
    history: list[dict[str, Any]]  # metrics.jsonl records


# -- building blocks -------------------------------------------------------------------------------
def policy_config(
    size: str, image_size: int, vocab_size: int, horizon: int, action_dim: int, state_dim: int
) -> KIPolicyConfig:
    """The architecture of a size for the data's shapes (the recipe is applied on top)."""
    expert = dict(horizon=horizon, action_dim=action_dim, state_dim=state_dim)
    if size == "tiny":
        patch = max(1, image_size // 8)  # 64 image tokens
        backbone = BackboneConfig(vocab_size=vocab_size, image_size=image_size, patch_size=patch,
                                  **WORLD_IMAGE_INPUT)  # fmt: skip
        return KIPolicyConfig(backbone=backbone, expert=ExpertConfig(**expert))
    backbone = BackboneConfig(
        vocab_size=vocab_size,
        width=32,
        depth=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        mlp_hidden=64,
        image_size=image_size,
        patch_size=image_size // 4,
    )
    return KIPolicyConfig(
        backbone=backbone,
        expert=ExpertConfig(width=24, num_heads=2, mlp_hidden=48, time_embedding_dim=16, **expert),
    )


def fit_text_tokenizer(extra: list[str] = ()) -> TextTokenizer:
    """Word-level vocabulary of everything the world can say, plus `extra` texts (dataset tasks)."""
    return TextTokenizer.fit([" ".join(corpus_words()), *extra])


class MixtureBatches:
    """`batch_fn` for the Trainer: example i of (step, micro) is a pure function of its indices.

    Each example is drawn by the data package's `MixtureSampler` from its own generator
    `default_rng([seed, step, micro, i])`, which also draws its flow noise and time. So a resumed
    run, or a run split over ranks, sees exactly the examples a single run would.
    """

    def __init__(self, builder: BatchBuilder, sampler: MixtureSampler, seed: int, flow_samples: int = 1,
                 grad_accum: int = 1) -> None:  # fmt: skip
        self.builder, self.sampler, self.seed = builder, sampler, seed
        self.flow_samples, self.grad_accum = flow_samples, grad_accum

    def _rng(self, step: int, micro: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, micro, index])

    def loss_denominator(self, step: int, world_size: int, n: int) -> dict[str, float]:
        """Examples carrying each loss in the whole global batch, per shard (rank x micro-step)."""
        sources = [
            self.sampler.draw_source(self._rng(step, micro, i))
            for micro in range(self.grad_accum)
            for i in range(world_size * n)
        ]
        shards = world_size * self.grad_accum
        robot = sum(s == "robot" for s in sources)
        fast = robot if self.builder.action_tokenizer is not None else 0
        seen = sum(s in ("caption", "vqa") for s in sources)  # language examples with a labelled image
        vqa = sum(s == "vqa" for s in sources)  # the examples whose prompt refers to objects
        return {"flow": robot / shards, "fast": fast / shards, "lm": (len(sources) - robot) / shards,
                "vision": seen / shards, "refer": vqa / shards}  # fmt: skip

    def __call__(self, step: int, micro: int, rank: int, world_size: int, n: int) -> KIBatch:
        examples, noise, times = [], [], []
        h, d = self.builder.horizon, self.builder.action_dim
        for j in range(n):
            rng = self._rng(step, micro, rank * n + j)
            examples.append(self.sampler.draw(rng))
            noise.append(rng.standard_normal((self.flow_samples, h, d), dtype=np.float32))
            times.append(rng.random(self.flow_samples))
        batch = self.builder.collate(examples)
        batch.flow_noise = torch.from_numpy(np.stack(noise))  # [B, k, H, D]
        batch.flow_time = flow.time_from_uniform(torch.from_numpy(np.stack(times))).float()  # [B, k]
        batch.loss_denominator = self.loss_denominator(step, world_size, n)
        return batch


def _open_dataset(data: Path | str, horizon: int):
    from kivla.data.lerobot import LeRobotDataset

    dataset = LeRobotDataset(data, horizon=horizon)
    return dataset, QuantileNormalizer.from_stats(dataset.stats, (ACTION_KEY, STATE_KEY))


def _action_tokenizer(config: RunConfig, target: str) -> tuple[ActionTokenizer | None, int]:
    """The run's discrete action target (fitted on the data, or loaded) and the suffix length its
    tokens need: <act> + the longest encoding of the fitting chunks + <eos>."""
    from kivla.tokenizers import fit_tokenizer, load_tokenizer
    from kivla.tokenizers.data import load_chunks

    if target == "none":
        return None, 0
    chunks = load_chunks(config.data, config.horizon, max_chunks=config.tokenizer_fit_chunks)
    if config.action_tokenizer is not None:
        tokenizer = load_tokenizer(config.action_tokenizer)
    else:
        tokenizer = fit_tokenizer(target, chunks)
    if tokenizer.vocab_size > ACTION_VOCAB_RESERVED:
        raise ValueError(
            f"action tokenizer: vocab_size {tokenizer.vocab_size} exceeds the {ACTION_VOCAB_RESERVED} "
            "ids reserved for actions in the backbone vocabulary"
        )
    if tokenizer.horizon != config.horizon:
        raise ValueError(
            f"action tokenizer: horizon {tokenizer.horizon} != RunConfig.horizon {config.horizon}"
        )
    return tokenizer, max(len(ids) for ids in tokenizer.encode(chunks)) + 2


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


def _name_labels(policy: KIPolicy, text: TextTokenizer) -> None:
    """The world's label classes in words, for a policy whose vision loss names them."""
    if policy.config.vision_readout == "words" and policy.config.vision_labels:
        from kivla.data.world_scene import label_words

        policy.set_label_words(label_words(), text.token_id)


def pretrain_train_config(config: PretrainConfig) -> TrainConfig:
    """The optimizer schedule of a pretraining (or vision-alignment) run."""
    return TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                       warmup_steps=min(50, config.steps // 10), save_every=config.save_every or config.steps,
                       keep_last=1 if config.save_every is None else 100, precision=config.precision,
                       ema_decay=None, log_every=max(1, min(10, config.steps // 20)))  # fmt: skip


# -- entry points ----------------------------------------------------------------------------------
def pretrain_backbone(
    config: PretrainConfig, progress: bool = True, resume: bool = False, ctx: DistContext | None = None
) -> Path:
    """Language pretraining of the built-in VLM; returns the final checkpoint (a policy bundle).
    A real backbone (`config.backbone`) gets its vision-alignment stage instead."""
    if config.backbone != "tiny":
        from kivla.train.align import align_vision

        return align_vision(config, progress, resume, ctx)
    out = Path(config.out)
    text = fit_text_tokenizer()
    layout = VocabLayout(text.vocab_size, STATE_BINS, ACTION_VOCAB_RESERVED)
    from kivla.data.world_env import ACTION_DIM, STATE_DIM

    arch = policy_config(config.size, config.image_size, layout.vocab_size, 50, ACTION_DIM, STATE_DIM)
    arch = dataclasses.replace(arch, backbone=dataclasses.replace(arch.backbone, **config.backbone_overrides))
    policy_cfg = dataclasses.replace(arch, flow_weight=0.0, fast_weight=0.0, discrete_target="none",
                                     **config.policy_overrides)  # fmt: skip
    torch.manual_seed(config.seed)
    policy = KIPolicy(policy_cfg)
    _name_labels(policy, text)
    builder = BatchBuilder(text, None, image_size=config.image_size, horizon=50, action_dim=ACTION_DIM,
                           state_dim=STATE_DIM, max_prompt_len=MAX_PROMPT_LEN, max_suffix_len=MAX_SUFFIX_LEN,
                           layout=layout)  # fmt: skip
    bundle = PolicyBundle(policy, builder, None, recipe="pretrain")
    sampler = MixtureSampler(None, config.mixture.weights(), config.seed, image_size=config.image_size,
                             exclude_question_types=config.mixture.exclude_question_types)  # fmt: skip
    batches = MixtureBatches(builder, sampler, config.seed)
    train = pretrain_train_config(config)
    record = {"pretrain": {**dataclasses.asdict(config), "out": str(out)}}
    outcome = _run_trainer(bundle, batches, train, out, record, progress, resume, ctx)
    return outcome.checkpoints[-1]


def build_policy(config: RunConfig, resume: bool = False) -> tuple[PolicyBundle, MixtureBatches]:
    """The bundle a run starts from (backbone from `init`, fresh expert, fitted action tokenizer)
    and its batch function. With `resume`, the vocabulary and tokenizer of the newest checkpoint."""
    out = Path(config.out)
    dataset, normalizer = _open_dataset(config.data, config.horizon)
    image_size = dataset.info["features"][dataset.image_key]["shape"][0] if dataset.image_key else 64
    base, start = None, config.init
    if resume:
        # The newest checkpoint fixes the vocabulary and the action tokenizer; the trainer then
        # restores its weights, optimizer and schedule.
        start = latest_checkpoint(out / "checkpoints")
        if start is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {out / 'checkpoints'}")
        if (start / "action_tokenizer").is_dir():
            config = dataclasses.replace(config, action_tokenizer=start / "action_tokenizer")
    if start is not None:
        base = PolicyBundle.load(start, weights="model")
        text, layout = base.builder.text, base.builder.layout
    elif config.backbone != "tiny":
        text, layout = real_vocabulary(config.backbone)
    else:
        text = fit_text_tokenizer(sorted(set(dataset.tasks.values())))
        layout = VocabLayout(text.vocab_size, STATE_BINS, ACTION_VOCAB_RESERVED)
    real = base.config.backbone.kind if base is not None else config.backbone
    shapes = (image_size, config.horizon, dataset.action_dim, dataset.state_dim)
    if real != "tiny":
        arch = real_arch(real, config.vision, *shapes)
    else:
        arch = policy_config(config.size, shapes[0], layout.vocab_size, *shapes[1:])
    if base is not None:
        arch = dataclasses.replace(arch, backbone=base.config.backbone)
    overrides = dict(config.policy_overrides)
    if config.discrete_target is not None:
        overrides["discrete_target"] = config.discrete_target
    policy_cfg = recipe_config(config.recipe, arch, **overrides)
    tokenizer, action_tokens = (
        _action_tokenizer(config, policy_cfg.discrete_target) if policy_cfg.uses_discrete_loss else (None, 0)
    )
    torch.manual_seed(config.train.seed)
    policy = KIPolicy(policy_cfg)
    _name_labels(policy, text)
    if base is not None:
        backbone_state = {
            k.removeprefix("backbone."): v
            for k, v in base.policy.state_dict().items()
            if k.startswith("backbone.")
        }
        policy.backbone.load_state_dict(backbone_state)
    builder = BatchBuilder(text, tokenizer, image_size=image_size, horizon=config.horizon,
                           action_dim=dataset.action_dim, state_dim=dataset.state_dim,
                           state_input=policy_cfg.state_input, max_prompt_len=MAX_PROMPT_LEN,
                           max_suffix_len=max(MAX_SUFFIX_LEN, action_tokens), layout=layout)  # fmt: skip
    bundle = PolicyBundle(policy, builder, normalizer, recipe=config.recipe)
    sampler = MixtureSampler(dataset, config.mixture.weights(), config.train.seed, normalizer,
                             config.mixture.exclude_question_types, image_size)  # fmt: skip
    batches = MixtureBatches(builder, sampler, config.train.seed, policy_cfg.flow_samples_per_example,
                             config.train.grad_accum)  # fmt: skip
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


__all__ = [
    "MixtureConfig",
    "PretrainConfig",
    "RunConfig",
    "RunOutcome",
    "build_policy",
    "load_run_config",
    "pretrain_backbone",
    "train_policy",
]
