"""The studies (their variants: recipe + discrete target + mixture) and budgets (data, steps,
evaluation sizes), as named presets (`kivla.presets`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kivla.model.config import DISCRETE_TARGETS
from kivla.model.presets import RECIPES, SIZES, Recipe
from kivla.presets import Presets, check_positive


@dataclass(frozen=True)
class Variant:
    name: str
    recipe: str  # a name in kivla.model.presets.RECIPES
    discrete_target: str | None = None  # overrides the recipe's
    language: bool = True  # co-train on captions / VQA / text besides robot data

    def __post_init__(self) -> None:
        RECIPES.get(self.recipe, "Variant.recipe")  # an unknown recipe raises, naming the nearest
        if self.discrete_target is not None and self.discrete_target not in DISCRETE_TARGETS:
            raise ValueError(
                f"Variant.discrete_target: expected one of {DISCRETE_TARGETS} or None, "
                f"got {self.discrete_target!r}"
            )

    @property
    def recipe_preset(self) -> Recipe:
        return RECIPES[self.recipe]

    @property
    def uses_discrete_loss(self) -> bool:
        target = self.discrete_target or self.recipe_preset.discrete_target
        return target != "none" and self.recipe_preset.fast_weight > 0


@dataclass(frozen=True)
class Study:
    name: str
    variants: Presets[Variant]


STUDIES: Presets[Study] = Presets("study", [
    Study("ki", Presets("variant", [
        Variant("naive", "naive"),
        Variant("stopgrad", "stopgrad"),
        Variant("joint_fast", "joint_fast"),
        Variant("ki", "ki"),
        Variant("frozen", "frozen"),
        Variant("ki_no_lang", "ki", language=False),
    ])),
    Study("targets", Presets("variant", [
        Variant(f"ki_{t}", "ki", discrete_target=t) for t in ("fast", "binning", "wavelet", "vq", "none")
    ])),
])  # fmt: skip


@dataclass(frozen=True)
class Budget:
    name: str
    size: str  # a name in kivla.model.presets.SIZES
    image_size: int
    horizon: int
    train_episodes: int
    val_episodes: int
    pretrain_steps: int
    pretrain_batch_size: int
    steps: int
    batch_size: int
    save_every: int
    lr: float = 3e-4
    eval_episodes: int = 16  # per split at every checkpoint
    final_eval_episodes: int = 40  # per split at the last checkpoint
    max_steps: int = 200
    num_envs: int = 20
    val_frames: int = 256
    language: tuple[int, int, int] = (300, 60, 60)  # VQA, captions, text examples
    grad_batches: int = 8
    grad_batch_size: int = 16
    grad_bins: int = 5
    tokenizer_chunks: int = 2000

    def __post_init__(self) -> None:
        SIZES.get(self.size, "Budget.size")  # an unknown size raises, naming the nearest
        check_positive(self)
        if len(self.language) != 3 or min(self.language) < 0:
            raise ValueError(
                f"Budget.language: expected 3 counts >= 0 (VQA, captions, text), got {self.language}"
            )

    def values(self) -> dict:
        """The budget's numbers, without its name (what the cache tag hashes and the report records)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


BUDGETS: Presets[Budget] = Presets(
    "budget",
    [
        # A few seconds a run: exercises every code path (the unit test); the numbers mean nothing.
        Budget(
            name="test",
            size="test",
            image_size=32,
            horizon=20,  # wavelet (db4) needs H >= 16, VQ (patches of 5) a multiple of 5
            train_episodes=6,
            val_episodes=2,
            pretrain_steps=3,
            pretrain_batch_size=4,
            steps=4,
            batch_size=4,
            save_every=2,
            eval_episodes=4,
            final_eval_episodes=4,
            max_steps=30,
            num_envs=4,
            val_frames=8,
            language=(12, 3, 3),
            grad_batches=2,
            grad_batch_size=2,
            tokenizer_chunks=200,
        ),
        # <= 30 minutes on 2 CPU cores for 6 variants x 3 seeds: a smoke run of the whole pipeline.
        # Measured (ki, 2 of 6 variants, 1 seed): a 50-step run trains in 16 s and its 2 checkpoints
        # evaluate in 17 s; 150 pretraining steps took 6.5 min under load average ~6 (~2 min idle).
        # So ~18 x 40 s + pretraining = ~15 min on an idle machine, ~30 min under moderate load.
        Budget(
            name="quick",
            size="tiny",
            image_size=32,
            horizon=20,
            train_episodes=60,
            val_episodes=10,
            pretrain_steps=150,
            pretrain_batch_size=32,
            steps=60,
            batch_size=16,
            save_every=30,
            lr=1e-3,
            eval_episodes=8,
            final_eval_episodes=16,
            max_steps=100,
            num_envs=16,
            val_frames=64,
            language=(100, 20, 20),
            grad_batches=4,
            grad_batch_size=8,
            tokenizer_chunks=1000,
        ),
        # About 2-3 hours on 2 CPU cores: long enough for the policies to start solving tasks.
        Budget(
            name="medium",
            size="tiny",
            image_size=32,
            horizon=20,
            train_episodes=200,
            val_episodes=20,
            pretrain_steps=600,
            pretrain_batch_size=32,
            steps=600,
            batch_size=32,
            save_every=150,
            lr=1e-3,
            eval_episodes=16,
            final_eval_episodes=40,
            max_steps=150,
            num_envs=16,
            val_frames=128,
            language=(200, 40, 40),
            tokenizer_chunks=2000,
        ),
        # The paper-like setting (64px, H = 50): about 13 hours on 2 CPU cores; meant for a GPU.
        Budget(
            name="full",
            size="tiny",
            image_size=64,
            horizon=50,
            train_episodes=400,
            val_episodes=40,
            pretrain_steps=2000,
            pretrain_batch_size=32,
            steps=3000,
            batch_size=32,
            save_every=500,
            eval_episodes=40,
            final_eval_episodes=100,
            val_frames=512,
        ),
    ],
)
