"""The model's named presets: recipes (gradient routing + loss weights) and architecture sizes.

Each kind is one `Presets` list of whole, frozen config objects (`kivla.presets`); a typo names
the nearest preset. A recipe touches only the recipe fields of a `KIPolicyConfig`; a size only
the architecture, for the data's shapes (image size, vocabulary, horizon, action and state dims).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kivla.model.config import DISCRETE_TARGETS, BackboneConfig, ExpertConfig, KIPolicyConfig
from kivla.presets import Presets


@dataclass(frozen=True)
class Recipe:
    """How the losses train the policy. "fast" in `fast_weight` is the paper's name (L_FAST) for
    the cross-entropy on the discrete action target, whichever tokenizer gives it."""

    name: str
    insulate: bool  # stop-gradient on the backbone K/V where the expert reads them
    discrete_target: str  # the discrete action target trained through the backbone; "none": no such loss
    fast_weight: float
    flow_weight: float = 1.0
    lm_weight: float = 1.0
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        if self.discrete_target not in DISCRETE_TARGETS:
            raise ValueError(
                f"Recipe.discrete_target: expected one of {DISCRETE_TARGETS}, got {self.discrete_target!r}"
            )
        for name in ("fast_weight", "flow_weight", "lm_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Recipe.{name}: expected >= 0, got {getattr(self, name)}")

    @property
    def trains_actions(self) -> bool:
        """True for the robot recipes; False for language pretraining."""
        return self.flow_weight > 0 or self.fast_weight > 0

    def fields(self) -> dict[str, Any]:
        """The KIPolicyConfig fields this recipe sets."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}

    def apply(self, base: KIPolicyConfig | None = None, **overrides: Any) -> KIPolicyConfig:
        """`base` (default architecture when None) under this recipe, then `overrides`; an
        `expert` override given as a dict sets those fields of the base's ExpertConfig
        (`{"expert": {"keypoints": 16}}`, as a JSON command line gives it; backbone fields have
        `backbone_overrides` in `kivla.model.assemble.policy_config`)."""
        base = base or KIPolicyConfig()
        if isinstance(overrides.get("expert"), dict):
            overrides = {**overrides, "expert": dataclasses.replace(base.expert, **overrides["expert"])}
        return dataclasses.replace(base, **{**self.fields(), **overrides})


# The recipes of the KI paper's comparison, and language pretraining of the backbone.
RECIPES: Presets[Recipe] = Presets("recipe", [
    # pi0-style: the flow gradient flows into the backbone, no discrete target.
    Recipe("naive", insulate=False, discrete_target="none", fast_weight=0.0),
    # Stop-gradient alone: the backbone only learns from language data.
    Recipe("stopgrad", insulate=True, discrete_target="none", fast_weight=0.0),
    # FAST co-training without insulation.
    Recipe("joint_fast", insulate=False, discrete_target="fast", fast_weight=1.0),
    # Knowledge Insulation: stop-gradient + FAST cross-entropy into the backbone.
    Recipe("ki", insulate=True, discrete_target="fast", fast_weight=1.0),
    # Frozen VLM: only the expert trains.
    Recipe("frozen", insulate=True, discrete_target="none", fast_weight=0.0, lm_weight=0.0,
           freeze_backbone=True),
    # Language pretraining of the backbone: captions / VQA / text only, no action loss.
    Recipe("pretrain", insulate=True, discrete_target="none", fast_weight=0.0, flow_weight=0.0),
])  # fmt: skip


def recipe_config(name: str, base: KIPolicyConfig | None = None, **overrides: Any) -> KIPolicyConfig:
    """The config of recipe `name` on top of `base` (default architecture when None)."""
    return RECIPES[name].apply(base, **overrides)


@dataclass(frozen=True)
class Perception:
    """How the action expert finds what the instruction names in the image (docs/learning.md):
    the policy fields it sets on top of a recipe. `policy_overrides` given with it win, field by
    field (an `expert` dict is merged into this one's)."""

    name: str
    state_input: str = "prompt"  # KIPolicyConfig.state_input
    keypoints: int = 0  # ExpertConfig.keypoints: spatial-softmax keypoints as one expert token
    keypoint_naming: bool = False  # their scores have the backbone's naming with the prompt's words
    keypoint_supervision: bool = False  # keypoints 0 / 1 supervised onto the named objects, teacher-forced
    naming_loss: bool = False  # the naming loss on annotated robot frames trains the backbone's readout
    keypoint_peak: int = -1  # ExpertConfig.keypoint_peak: keypoints 0 / 1 as a local soft-argmax
    goal_keypoint: bool = False  # KIPolicyConfig.keypoint_goal: keypoint 1 on where the target goes
    goal_point: bool = False  # ExpertConfig.goal_point: a regressed goal after keypoints 0 / 1
    keypoint_gain: float = 1.0  # ExpertConfig.keypoint_gain
    keypoint_input: str = "token"  # ExpertConfig.keypoint_input
    # ExpertConfig.keypoint_offset_layer, with KIPolicyConfig.keypoint_offset_weight 1 when set
    offset_layer: int | None = None
    goal_layer: int | None = None  # ExpertConfig.goal_layer

    def fields(self) -> dict[str, Any]:
        """The KIPolicyConfig overrides (with an `expert` dict) this perception sets."""
        fields: dict[str, Any] = {"state_input": self.state_input}
        if self.naming_loss:
            fields.update(vision_weight=1.0, vision_labels=20, vision_readout="words")
        if self.keypoint_supervision:
            fields.update(keypoint_weight=1.0, keypoint_teacher_forcing=1.0, vision_labels=20)
        if self.goal_keypoint:
            fields["keypoint_goal"] = True
        if self.offset_layer is not None:
            fields["keypoint_offset_weight"] = 1.0
        if self.keypoints:
            fields["expert"] = dict(
                keypoints=self.keypoints, keypoint_layer=-2, keypoints_follow_prompt=True,
                keypoint_offsets=True, keypoint_prompt_pool="attention",
                keypoint_naming=self.keypoint_naming, keypoint_peak=self.keypoint_peak,
                goal_point=self.goal_point, keypoint_gain=self.keypoint_gain,
                keypoint_input=self.keypoint_input, keypoint_offset_layer=self.offset_layer,
                goal_layer=self.goal_layer,
            )  # fmt: skip
        return fields

    def overrides(self, policy_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """This perception's fields with `policy_overrides` on top (expert dicts merged)."""
        mine, given = self.fields(), dict(policy_overrides or {})
        if isinstance(given.get("expert"), dict) and "expert" in mine:
            given["expert"] = {**mine["expert"], **given["expert"]}
        return {**mine, **given}


PERCEPTIONS: Presets[Perception] = Presets("perception", [
    # The expert reads the backbone's K/V only; the state as 256-bin prompt tokens (pi0.5).
    Perception("prefix"),
    # Eighth round of docs/learning.md: 16 prompt-conditioned keypoints of the image tokens' values
    # in the last layer but one (layer 2 of the tiny size), scored also by the backbone's naming of
    # each token with the instruction's words, keypoints 0 / 1 supervised onto the target and the
    # destination; the naming loss keeps the readout learning under co-training (no effect when
    # the backbone is frozen); the state as an expert token. Ninth round: keypoints 0 / 1 read as
    # a soft-argmax over the 3x3 tokens around their peak (keypoint_peak=1).
    Perception("naming_keypoints", state_input="token", keypoints=16, keypoint_naming=True,
               keypoint_supervision=True, naming_loss=True, keypoint_peak=1),
    # Fourteenth round: the same, with keypoint 1 supervised onto where the demonstration takes the
    # target (annotation.goal) rather than onto the second named object, so that the expert is told
    # the named corner and the end of a push as it is told a place-on destination.
    Perception("goal_keypoints", state_input="token", keypoints=16, keypoint_naming=True,
               keypoint_supervision=True, naming_loss=True, keypoint_peak=1, goal_keypoint=True),
    # Fourteenth round: the two supervised keypoints of naming_keypoints (no unsupervised ones)
    # and one more point, the goal, regressed from the prompt and keypoints 0 / 1 (GoalPoint) and
    # supervised on annotation.goal; the three points join the state's expert token, multiplied
    # by 4 (the spread of the quantile-normalized state), as a privileged state would give them.
    # Eighteenth round: the keypoints' offsets read the first layer's values, where an object's
    # place in its patch is still linear, and every object's own token regresses it
    # (keypoint_offset_weight); the goal reads the first layer's prompt values, from which it
    # learns the named corner's row in a run's steps (from the third layer's it did not).
    Perception("goal_point", state_input="token", keypoints=2, keypoint_naming=True,
               keypoint_supervision=True, naming_loss=True, keypoint_peak=1, goal_point=True,
               keypoint_gain=4.0, keypoint_input="state", offset_layer=0, goal_layer=0),
])  # fmt: skip


@dataclass(frozen=True)
class Size:
    """An architecture: backbone and expert widths, depths and heads, the image token grid and
    the image input. The data's shapes come in `policy_config`."""

    name: str
    width: int
    depth: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_hidden: int
    tokens_per_side: int  # image tokens a side: patch_size = image_size // tokens_per_side
    expert_width: int
    expert_heads: int
    expert_mlp_hidden: int
    time_embedding_dim: int
    stem: str = "patch"
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_token_rms: float | None = None

    def __post_init__(self) -> None:
        if self.tokens_per_side < 1:
            raise ValueError(f"Size.tokens_per_side: expected >= 1, got {self.tokens_per_side}")
        self.policy_config(image_size=8 * self.tokens_per_side)  # the rest validates as configs

    def policy_config(
        self,
        image_size: int = 64,
        vocab_size: int = 2048,
        horizon: int = 50,
        action_dim: int = 7,
        state_dim: int = 8,
        tokens_per_side: int | None = None,
    ) -> KIPolicyConfig:
        """This architecture for the data's shapes, under the default recipe (apply one on top)."""
        side = tokens_per_side or self.tokens_per_side
        backbone = BackboneConfig(
            vocab_size=vocab_size, width=self.width, depth=self.depth, num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads, head_dim=self.head_dim, mlp_hidden=self.mlp_hidden,
            image_size=image_size, patch_size=max(1, image_size // side), stem=self.stem,
            image_mean=self.image_mean, image_std=self.image_std, image_token_rms=self.image_token_rms,
        )  # fmt: skip
        expert = ExpertConfig(
            width=self.expert_width, num_heads=self.expert_heads, mlp_hidden=self.expert_mlp_hidden,
            horizon=horizon, action_dim=action_dim, state_dim=state_dim,
            time_embedding_dim=self.time_embedding_dim,
        )  # fmt: skip
        return KIPolicyConfig(backbone=backbone, expert=expert)


SIZES: Presets[Size] = Presets("size", [
    # The default policy, ~5M parameters (DESIGN.md §7). It reads the world's images through a conv
    # stem, pixels centred on the table colour, image tokens entering at RMS 0.05 (docs/learning.md).
    Size("tiny", width=256, depth=4, num_heads=4, num_kv_heads=2, head_dim=64, mlp_hidden=704,
         tokens_per_side=8, expert_width=128, expert_heads=4, expert_mlp_hidden=256, time_embedding_dim=128,
         stem="conv", image_mean=(205 / 255, 195 / 255, 175 / 255), image_std=(0.25, 0.25, 0.25),
         image_token_rms=0.05),
    # A few thousand parameters, milliseconds a step: the tests and smoke runs.
    Size("test", width=32, depth=2, num_heads=2, num_kv_heads=1, head_dim=16, mlp_hidden=64,
         tokens_per_side=4, expert_width=24, expert_heads=2, expert_mlp_hidden=48, time_embedding_dim=16),
])  # fmt: skip


def tiny_test_config(**overrides: Any) -> KIPolicyConfig:
    """The `test` size at the unit tests' shapes (16 px images in 2×2 tokens, H=4, D=3, state 2)."""
    config = SIZES["test"].policy_config(
        image_size=16, vocab_size=64, horizon=4, action_dim=3, state_dim=2, tokens_per_side=2
    )
    return dataclasses.replace(config, **overrides)
