"""`KIPolicy`: backbone + action expert, the three losses, and cached flow sampling.

Training runs the backbone once over [image, prompt | suffix]; the expert reads each layer's prefix
K/V (detached when `insulate`), so the flow loss reaches the backbone only without insulation and
the FAST / answer tokens are never in what the expert reads. Sampling encodes the prefix once and
reuses its K/V for every Euler step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kivla.model import flow
from kivla.model.backbone import Backbone, BackboneOutput, PrefixCache
from kivla.model.backbones import build_backbone
from kivla.model.config import KIPolicyConfig
from kivla.model.expert import ActionExpert
from kivla.model.kibatch import KIBatch
from kivla.model.vision import (
    object_token_labels,
    object_tokens,
    referred_objects,
    referred_token_labels,
    token_cross_entropy_per_example,
)

LOSS_NAMES = ("flow", "fast", "lm", "vision", "refer", "where", "ground", "keypoint")


@dataclass
class LossOutput:
    total: Tensor  # scalar: flow_weight·flow + fast_weight·fast + lm_weight·lm + vision_weight·vision
    parts: dict[str, Tensor]  # unweighted scalar per loss name; 0 when no example carries it
    # ("vision" only for a policy with a vision head: `KIPolicy.loss_names`)


class KIPolicy(nn.Module):
    def __init__(self, config: KIPolicyConfig, backbone: Backbone | None = None) -> None:
        """`backbone`: an already built one (e.g. an HF adapter); default: built from the config."""
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else build_backbone(config.backbone)
        self.expert = ActionExpert(config.expert, self.backbone, state_token=config.state_input == "token")
        d = config.expert.action_dim
        # Quantile bounds per action dim (q01 -> -1, q99 -> +1); -1 / +1 is the identity.
        self.register_buffer("action_low", -torch.ones(d))
        self.register_buffer("action_high", torch.ones(d))
        # The dense vision head (a training aux head, like the LM head): image token -> label classes.
        width = config.backbone.width
        self.vision_head = nn.Linear(width, config.vision_labels) if config.vision_labels else None
        self.refer_head = nn.Linear(width, 3) if config.vision_labels else None  # (neither, first, second)
        # The position head: an object's token -> its centre (column, row) on the image grid.
        self.where_head = nn.Linear(width, 2) if config.where_weight > 0 else None
        # vision_readout "words": vocabulary ids of the (up to 2) words naming each class, -1 = none.
        if config.vision_labels and config.vision_readout == "words":
            self.register_buffer("label_token_ids", torch.full((config.vision_labels, 2), -1))
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)

    def set_label_words(
        self, words: list[tuple[str, ...]], token_id, near_words: tuple[str, ...] = ()
    ) -> None:
        """The words naming each vision label class (e.g. ("red", "circle")), as vocabulary ids;
        with naming_nearest, the words that ask for the object nearest the first name."""
        if len(words) != self.config.vision_labels:
            raise ValueError(f"label words: expected {self.config.vision_labels} classes, got {len(words)}")
        if hasattr(self, "label_token_ids"):
            for i, names in enumerate(words):
                ids = [token_id(w) for w in names][:2]
                self.label_token_ids[i] = torch.tensor((ids + ids + [-1, -1])[:2] if ids else [-1, -1])
        if self.config.backbone.naming_labels:  # words past the first two only where the vocabulary has them
            ids = [[token_id(w) for w in names] for names in words]
            self.backbone.naming.set_class_words(
                [[i for k, i in enumerate(row) if k < 2 or i is not None] for row in ids]
            )
        if self.config.backbone.naming_nearest:
            self.backbone.naming.set_near_words([token_id(w) for w in near_words])

    @property
    def loss_names(self) -> tuple[str, ...]:
        """The names in `LossOutput.parts` of this policy."""
        heads = {
            "vision": self.vision_head is not None,
            "refer": self.vision_head is not None,
            "where": self.where_head is not None,
            "ground": self.config.ground_weight > 0,
            "keypoint": self.config.keypoint_weight > 0,
        }
        return tuple(n for n in LOSS_NAMES if heads.get(n, True))

    # -- normalization ---------------------------------------------------------------------------
    def set_action_bounds(self, q01: Tensor, q99: Tensor) -> None:
        """Bounds used by `sample_actions` to unnormalize (e.g. stats["action"]["q01"/"q99"])."""
        d = self.config.expert.action_dim
        q01, q99 = torch.as_tensor(q01, dtype=torch.float32), torch.as_tensor(q99, dtype=torch.float32)
        if q01.shape != (d,) or q99.shape != (d,):
            raise ValueError(
                f"action bounds: expected q01 and q99 of shape [{d}], got {q01.shape}, {q99.shape}"
            )
        if not torch.isfinite(q01).all() or not torch.isfinite(q99).all():
            raise ValueError("action bounds: q01 / q99 contain NaN or inf")
        self.action_low.copy_(q01)
        self.action_high.copy_(q99)

    def unnormalize_actions(self, actions: Tensor) -> Tensor:
        """[-1, 1] -> [q01, q99] per dim; a constant dim (q01 == q99) maps x -> x + q01, the inverse
        of kivla.data's QuantileNormalizer for such dims."""
        span = self.action_high - self.action_low
        scaled = (actions + 1.0) * 0.5 * span + self.action_low
        return torch.where(span > 1e-8, scaled, actions + self.action_low)

    # -- validation ------------------------------------------------------------------------------
    def validate(self, batch: KIBatch, targets: bool) -> None:
        """ValueError naming the field when the batch does not fit this policy."""
        c = self.config
        b, s = batch.batch_size, c.backbone.image_size
        if batch.images.shape != (b, 3, s, s):
            raise ValueError(f"images: expected [B, 3, {s}, {s}], got {list(batch.images.shape)}")
        for name in ("images", "state"):
            if not torch.isfinite(getattr(batch, name)).all():
                raise ValueError(f"{name}: contains NaN or inf")
        vocab = self.backbone.vocab_size
        for name in ("prefix_ids", "suffix_ids"):
            ids = getattr(batch, name)
            if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
                raise ValueError(
                    f"{name}: ids must be in [0, {vocab}) (backbone vocab_size), got max {ids.max()}"
                )
        if c.state_input == "token" and batch.state.shape != (b, c.expert.state_dim):
            raise ValueError(f"state: expected [B, {c.expert.state_dim}], got {list(batch.state.shape)}")
        needs_image = torch.ones(b, dtype=torch.bool, device=batch.images.device)
        if targets:
            h, d = c.expert.horizon, c.expert.action_dim
            if batch.actions is None or batch.action_is_pad is None:
                raise ValueError("actions: a training batch needs actions and action_is_pad")
            if batch.actions.shape != (b, h, d):
                raise ValueError(
                    f"actions: expected [B, H={h}, D={d}] (action dim {d}), got {list(batch.actions.shape)}"
                )
            if not torch.isfinite(batch.actions).all():
                raise ValueError("actions: contains NaN or inf")
            if batch.action_is_pad.shape != (b, h):
                raise ValueError(f"action_is_pad: expected [B, {h}], got {list(batch.action_is_pad.shape)}")
            needs_image = batch.loss_mask["flow"] | batch.loss_mask["fast"]
        if c.require_image:
            missing = (needs_image & ~batch.image_mask).nonzero().flatten().tolist()
            if missing:
                raise ValueError(
                    f"images: examples {missing} need an image (require_image=True) but have none"
                )

    # -- forward ---------------------------------------------------------------------------------
    def _encode(self, batch: KIBatch, with_suffix: bool, image_hidden_layers: tuple[int, ...] = (),
                attention_layers: tuple[int, ...] = ()):  # fmt: skip
        suffix = (batch.suffix_ids, batch.suffix_mask) if with_suffix else (None, None)
        naming = self.config.expert.keypoint_naming
        layers = tuple(sorted(set(image_hidden_layers) | ({self.config.vision_layer} if naming else set())))
        extra = {"image_hidden_layers": layers} if layers else {}
        if attention_layers:
            extra["text_attention_layers"] = attention_layers
        out = self.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask, *suffix,
                            **extra)  # fmt: skip
        if naming:
            out.cache.image_naming = self.prompt_naming(out, batch)
        return out

    def encode_prefix(self, batch: KIBatch) -> PrefixCache:
        """The prefix cache the expert reads at sampling time (image + prompt, no suffix; with the
        image naming when the keypoints read it)."""
        return self._encode(batch, with_suffix=False).cache

    def prompt_naming(self, out: BackboneOutput, batch: KIBatch) -> Tensor:
        """What keypoints scored by naming read, [B, n, Lp] float: with the backbone's naming
        attention, the log-probability its object head gives at each image token to the classes
        each prompt token looks for (0 for tokens that do not look: kivla.model.naming); otherwise
        `prompt_word_logprobs`. (A prompt token's bias depends on the prompt only.)"""
        if out.naming_bias is None:
            return self.prompt_word_logprobs(out, batch.prefix_ids)
        return out.naming_bias[:, : batch.prefix_ids.shape[1]].transpose(1, 2)

    def prompt_word_logprobs(self, out: BackboneOutput, prefix_ids: Tensor) -> Tensor:
        """The backbone's naming of its image tokens in the prompt's words: [B, n, Lp] float, the
        log-probability of prompt token l's word at image token i through the tied LM head (at
        `vision_layer`, the "words" readout of pretraining); what keypoints scored by naming read."""
        layer = self.config.vision_layer
        if layer not in out.image_hidden:
            raise ValueError(
                f"ExpertConfig.keypoint_naming: the backbone ({type(self.backbone).__name__}) does not "
                f"expose its image tokens after layer {layer} (vision_layer)"
            )
        logp = self.image_word_logprobs(out.image_hidden[layer])  # [B, n, V]
        return logp.gather(-1, prefix_ids[:, None].expand(-1, logp.shape[1], -1))  # [B, n, Lp]

    def _expert_reads(self, cache: PrefixCache) -> PrefixCache:
        # The one place where insulation happens: the forward pass is unchanged.
        return cache.detach() if self.config.insulate else cache

    def velocity(self, batch: KIBatch, noisy_actions: Tensor, t: Tensor) -> Tensor:
        """v_theta [B, H, D] at (x_t, t), with the backbone run over the batch's prefix and suffix."""
        cache = self._expert_reads(self._encode(batch, with_suffix=True).cache)
        return self.expert(cache, noisy_actions, t, batch.state)

    def forward(
        self, batch: KIBatch, generator: torch.Generator | None = None, flow_time: float | None = None
    ) -> LossOutput:
        """All losses of a batch; `generator` seeds flow times and noise; `flow_time` fixes t for
        every flow sample (for studies of the gradient across t) instead of sampling it."""
        self.validate(batch, targets=True)
        c = self.config
        wants = {
            "fast": c.uses_discrete_loss
            and bool((batch.suffix_loss["fast"] & batch.loss_mask["fast"][:, None]).any()),
            "lm": c.lm_weight > 0 and bool((batch.suffix_loss["lm"] & batch.loss_mask["lm"][:, None]).any()),
        }
        for name in ("vision", "refer", "where", "ground", "keypoint"):
            labelled = self._labelled_rows(batch, name)
            weight = getattr(c, f"{name}_weight")
            wants[name] = weight > 0 and batch.image_labels is not None and bool(labelled.any())
        wants["ground"] = wants["ground"] and (wants["lm"] or c.ground_queries == "names")
        if batch.expert_only:
            wants = {k: v and k == "keypoint" for k, v in wants.items()}
        attention_layers = self.ground_layers if wants["ground"] else ()
        layers = {c.vision_layer for n in ("vision", "where") if wants[n]} | (
            {c.refer_layer} if wants["refer"] else set()
        )
        # Only the expert's losses (e.g. an expert step, `KIBatch.expert_only`): an insulated or
        # frozen backbone gets no gradient from them, so its pass records no graph.
        backbone_learns = not (c.insulate or c.freeze_backbone) or any(
            v for k, v in wants.items() if k != "keypoint"
        )
        with contextlib.nullcontext() if backbone_learns else torch.no_grad():
            out = self._encode(batch, with_suffix=wants["fast"] or wants["lm"],
                               image_hidden_layers=tuple(sorted(layers)),
                               attention_layers=attention_layers)  # fmt: skip
        zero = batch.images.new_zeros(())
        parts = {
            "flow": self._flow_loss(batch, out.cache, generator, flow_time) if c.flow_weight > 0 else zero
        }
        for name in ("fast", "lm"):
            parts[name] = self._token_loss(batch, out, name) if wants[name] else zero
        if self.vision_head is not None:
            parts["vision"] = self._vision_loss(batch, out, "vision") if wants["vision"] else zero
            parts["refer"] = self._vision_loss(batch, out, "refer") if wants["refer"] else zero
        if self.where_head is not None:
            parts["where"] = self._where_loss(batch, out) if wants["where"] else zero
        if c.ground_weight > 0:
            parts["ground"] = self._ground_loss(batch, out) if wants["ground"] else zero
        if c.keypoint_weight > 0:
            parts["keypoint"] = self._keypoint_loss(batch, out.cache) if wants["keypoint"] else zero
        total = c.flow_weight * parts["flow"] + c.fast_weight * parts["fast"] + c.lm_weight * parts["lm"]
        for name in ("vision", "refer", "where", "ground", "keypoint"):
            total = total + getattr(c, f"{name}_weight") * parts.get(name, zero)
        if batch.expert_only:  # the backbone's losses were not computed: not reported as 0
            parts = {k: v for k, v in parts.items() if k in ("flow", "keypoint")}
        if not total.requires_grad:  # a batch with nothing to learn still supports backward()
            total = total + 0.0 * next(self.expert.parameters()).sum()
        return LossOutput(total, parts)

    def _flow_loss(
        self, batch: KIBatch, cache: PrefixCache, generator: torch.Generator | None, flow_time: float | None
    ) -> Tensor:
        rows = batch.loss_mask["flow"].nonzero().flatten()
        if rows.numel() == 0:
            return batch.images.new_zeros(())
        k = self.config.flow_samples_per_example
        cache = self._expert_reads(cache.select(rows)).repeat(k)
        actions = batch.actions[rows].repeat_interleave(k, dim=0)  # [B'k, H, D]
        valid = ~batch.action_is_pad[rows].repeat_interleave(k, dim=0)  # [B'k, H]
        state = batch.state[rows].repeat_interleave(k, dim=0)
        if batch.flow_noise is not None and batch.flow_time is not None and flow_time is None:
            # Drawn by the data pipeline per example: the loss does not depend on how a global
            # batch is split over ranks or accumulation steps.
            b, (_, h, d) = batch.batch_size, actions.shape
            if batch.flow_noise.shape != (b, k, h, d) or batch.flow_time.shape != (b, k):
                raise ValueError(
                    f"flow_noise / flow_time: expected [B, k={k}, {h}, {d}] and [B, k], got "
                    f"{list(batch.flow_noise.shape)} and {list(batch.flow_time.shape)}"
                )
            noise = batch.flow_noise[rows].flatten(0, 1).to(actions)  # example-major, like repeat
            t = batch.flow_time[rows].flatten(0, 1).to(actions)
        else:
            # Drawn on the CPU (where a seeded generator lives), then moved: same numbers on any device.
            noise = torch.randn(actions.shape, generator=generator).to(actions)
            if flow_time is None:
                t = flow.sample_time(actions.shape[0], generator=generator).to(actions)
            elif 0.0 <= flow_time <= 1.0:
                t = torch.full((actions.shape[0],), float(flow_time)).to(actions)
            else:
                raise ValueError(f"flow_time: expected in [0, 1], got {flow_time}")
        context = None
        if self.config.keypoint_teacher_forcing > 0 and batch.image_labels is not None:
            use, centre = self._forced_keypoints(batch, rows, generator)
            forced = (use.repeat_interleave(k, dim=0), centre.repeat_interleave(k, dim=0))
            context = self.expert.context(cache, actions.shape[1], actions.dtype, forced)
        v = self.expert(cache, flow.interpolate(noise, actions, t), t, state, context)
        error = (v - flow.target_velocity(noise, actions)).pow(2).mean(dim=-1)  # [B'k, H]
        per_sample = (error * valid).sum(-1) / valid.sum(-1).clamp(min=1)  # [B'k]
        per_example = per_sample.view(-1, k).mean(-1)  # [B']
        return self._batch_mean(batch, "flow", per_example)

    def _token_loss(self, batch: KIBatch, out: BackboneOutput, name: str) -> Tensor:
        """Next-token CE over the suffix targets tagged `name`: mean per example, then `_batch_mean`."""
        targets = batch.suffix_loss[name][:, 1:] & batch.loss_mask[name][:, None]  # [B, Ls-1]
        hidden = out.suffix_hidden[:, :-1][targets]  # the token before each target predicts it
        logits = self.backbone.lm_logits(hidden)  # [T, V]
        ce = F.cross_entropy(logits.float(), batch.suffix_ids[:, 1:][targets], reduction="none")  # [T]
        example = targets.nonzero()[:, 0]  # [T]: which example each target token belongs to
        b = batch.batch_size
        total = ce.new_zeros(b).index_add(0, example, ce)
        count = ce.new_zeros(b).index_add(0, example, torch.ones_like(ce))
        has = count > 0
        return self._batch_mean(batch, name, total[has] / count[has])

    def _vision_loss(self, batch: KIBatch, out: BackboneOutput, name: str) -> Tensor:
        """Dense loss of the image tokens ("vision": the class of the object each token owns, also
        through the object head of naming attention when the backbone has one; "refer": whether
        it owns a referred object): mean per example, then `_batch_mean`."""
        c = self.config
        layer = c.vision_layer if name == "vision" else c.refer_layer
        if layer not in out.image_hidden:
            raise ValueError(f"{name} loss: this backbone does not expose its image tokens")
        rows = (batch.loss_mask[name] & batch.image_mask).nonzero().flatten()
        owners = object_token_labels(batch.image_labels[rows], c.vision_labels, c.backbone.patch_size)
        hidden = out.image_hidden[layer][rows]  # [B', N, W]
        if name == "refer":
            logits, targets = self.refer_head(hidden), referred_token_labels(owners, batch.image_refs[rows])
            return self._batch_mean(batch, name, token_cross_entropy_per_example(logits, targets))
        if c.vision_readout == "words":
            loss = self._naming_loss(hidden, owners)
        else:
            loss = token_cross_entropy_per_example(self.vision_head(hidden), owners)  # [B', N, C], [B', N]
        if out.object_logits is not None:  # naming attention: its object head learns the same classes
            loss = loss + token_cross_entropy_per_example(out.object_logits[rows], owners)
        return self._batch_mean(batch, name, loss)

    def _where_loss(self, batch: KIBatch, out: BackboneOutput) -> Tensor:
        """Squared error of the position head's object centres [B', N, 2] (token units), summed over
        (column, row), mean over the tokens that own an object, then `_batch_mean`."""
        c = self.config
        if c.vision_layer not in out.image_hidden:
            raise ValueError("where loss: this backbone does not expose its image tokens")
        rows = (batch.loss_mask["where"] & batch.image_mask).nonzero().flatten()
        owners, offsets = object_tokens(batch.image_labels[rows], c.vision_labels, c.backbone.patch_size)
        predicted = self.where_head(out.image_hidden[c.vision_layer][rows]).float()  # [B', N, 2]
        owned = (owners > 0).float()
        error = (predicted - offsets).pow(2).sum(-1)  # [B', N]
        return self._batch_mean(batch, "where", (error * owned).sum(-1) / owned.sum(-1).clamp(min=1))

    @property
    def ground_layers(self) -> tuple[int, ...]:
        """The backbone layers whose attention the ground loss supervises."""
        c = self.config
        return (c.ground_layer, c.ground_layer + 1) if c.ground_queries == "chain" else (c.ground_layer,)

    def _ground_loss(self, batch: KIBatch, out: BackboneOutput) -> Tensor:
        """Minus the log of the attention mass that the supervised queries put on their targets
        (`KIPolicyConfig.ground_queries`): the answer-predicting suffix positions in heads 0 / 1 on
        the token of the object referred first / second ("answer"); the end of each referred
        object's name in the prompt, head 0, on that object's token ("names"); "names", then the
        answer positions in heads 0 / 1 of the next layer on those name ends ("chain", the mean
        of both hops)."""
        c = self.config
        if any(layer not in out.text_attention for layer in self.ground_layers):
            raise ValueError(
                f"ground loss: this backbone ({type(self.backbone).__name__}) does not expose its attention"
            )
        rows = self._labelled_rows(batch, "ground")
        if c.ground_queries != "names":
            rows = rows & batch.loss_mask["lm"]
        rows = rows.nonzero().flatten()
        n, lp = c.backbone.num_image_tokens, batch.prefix_ids.shape[1]
        marked, _ = referred_objects(batch.image_labels[rows], batch.image_refs[rows],
                                     c.vision_labels, c.backbone.patch_size)  # fmt: skip
        # [B', 2, Ls-1]: the suffix positions that predict an answer token, for both roles
        answers = batch.suffix_loss["lm"][rows, 1:].float()[:, None].expand(-1, 2, -1)
        first = out.text_attention[c.ground_layer][rows]  # [B', h, Lp + Ls, Np + Ls]
        if c.ground_queries == "answer":
            return self._attention_nll(batch, first[:, :2, lp:-1, :n], answers, marked)
        ends = self._name_ends(batch.prefix_ids[rows], batch.image_refs[rows])  # [B', 2, Lp]
        loss = self._attention_nll(batch, first[:, :1, :lp, :n].expand(-1, 2, -1, -1), ends, marked)
        if c.ground_queries == "chain":
            second = out.text_attention[c.ground_layer + 1][rows, :2, lp:-1, n : n + lp]  # [B', 2, Ls-1, Lp]
            loss = (loss + self._attention_nll(batch, second, answers, ends > 0)) / 2
        return loss

    def _attention_nll(self, batch: KIBatch, probs: Tensor, queries: Tensor, targets: Tensor) -> Tensor:
        """probs [B', 2, Q, K]: attention of role r's query positions; queries float [B', 2, Q]: 1
        where supervised; targets bool [B', 2, K]: the keys role r must attend to. Minus the log
        of the mass on the targets, mean over the queries and the roles an example has."""
        found = (probs * targets[:, :, None].float()).sum(-1).clamp(min=1e-6)  # [B', 2, Q]
        per_role = -(found.log() * queries).sum(-1) / queries.sum(-1).clamp(min=1)
        has = (targets.any(-1) & (queries.sum(-1) > 0)).float()  # [B', 2]
        return self._batch_mean(batch, "ground", (per_role * has).sum(-1) / has.sum(-1).clamp(min=1))

    def _name_ends(self, prefix_ids: Tensor, refs: Tensor) -> Tensor:
        """float [B, 2, Lp]: 1 at the prompt tokens that end the name of a class referred first /
        second (its colour word, then its shape word)."""
        words = self.label_token_ids  # [C, 2]: (colour, shape) ids, -1 = none
        before, last = prefix_ids[:, None, :-1], prefix_ids[:, None, 1:]  # [B, 1, Lp-1]
        named = (before == words[None, :, 0, None]) & (last == words[None, :, 1, None])  # [B, C, Lp-1]
        named = named & (words[None, :, 0, None] >= 0) & (words[None, :, 0, None] != words[None, :, 1, None])
        ends = torch.einsum("brc,bcl->brl", refs[:, :, : words.shape[0]].float(), named.float())
        return F.pad(ends.clamp(max=1), (1, 0))  # the shape word's own position

    @staticmethod
    def _labelled_rows(batch: KIBatch, name: str) -> Tensor:
        """bool [B]: the examples that carry the labels of dense loss `name` ("keypoint": robot
        frames whose instruction refers to objects; "ground": examples whose prompt refers to objects)."""
        if name == "keypoint":
            return batch.loss_mask["flow"] & batch.loss_mask.get("refer", batch.image_mask) & batch.image_mask
        if name == "ground":
            return batch.loss_mask.get("refer", batch.image_mask) & batch.image_mask
        return batch.loss_mask.get(name, batch.image_mask) & batch.image_mask

    def _keypoint_loss(self, batch: KIBatch, cache: PrefixCache) -> Tensor:
        """Keypoint r (r = 0: the object named first, 1: second, or with keypoint_goal where the target
        goes, `_keypoint_targets`) of the expert: cross-entropy of its
        spatial softmax against the object's token plus the squared error of its coordinates
        against the object's centre (grid units in [-1, 1]), and with a goal point
        (ExpertConfig.goal_point) its squared error against the frame's goal; mean over the roles an
        example has, plus `keypoint_offset_weight` times `_offset_error`, then `_batch_mean`. Reads
        the K/V the expert reads, so it trains expert parameters only."""
        c = self.config
        rows = self._labelled_rows(batch, "keypoint").nonzero().flatten()
        keypoints = self.expert.keypoints
        read = self._expert_reads(cache.select(rows))
        values = read.values[c.expert.keypoint_layer]
        weights = keypoints.weights(values, read.valid, read.image_naming)[:, :2].float()  # [B', 2, n]
        marked, centre = self._keypoint_targets(batch, rows)
        has = marked.any(-1)  # [B', 2]
        found = (weights * marked).sum(-1).clamp(min=1e-6)  # softmax mass on the object's token(s)
        offsets = keypoints.offsets(read.values[self.expert.offset_layer])  # [B', n, 2] or None
        points = keypoints.points(weights, offsets)  # [B', 2, 2]
        error = (points - centre).pow(2).sum(-1)  # [B', 2]
        total, count = ((-found.log() + error) * has).sum(-1), has.sum(-1).float()
        true_goal, has_goal = self._goals(batch, rows)
        if self.expert.goal is not None and has_goal.any():  # the goal point's error
            anchors = torch.where(has[..., None], centre, points.detach())  # true centres where known
            goal = self.expert.goal(read.values[self.expert.goal_layer], read.valid, anchors)  # [B', 2]
            total = total + (goal - true_goal).pow(2).sum(-1) * has_goal
            count = count + has_goal
        per_example = total / count.clamp(min=1)  # [B']
        if c.keypoint_offset_weight > 0:  # every object's own token: its offset to the object's centre
            per_example = per_example + c.keypoint_offset_weight * self._offset_error(batch, rows, offsets)
        return self._batch_mean(batch, "keypoint", per_example)

    def _offset_error(self, batch: KIBatch, rows: Tensor, offsets: Tensor) -> Tensor:
        """[B']: mean over each frame's labelled things (objects, gripper) of the squared error, in
        patch units, of the offset its own token (the one holding its centre) regresses against that
        centre (0 where a frame has none)."""
        c = self.config
        owners, centres = object_tokens(batch.image_labels[rows], c.vision_labels, c.backbone.patch_size)
        grid = self.expert.keypoints.grid
        own = owners > 0  # [B', n]: tokens holding the centre of an object (or of the gripper)
        cells = self.expert.keypoints.coords * (grid / 2)  # [n, 2] token centres in token units
        error = ((offsets.float() * (grid / 2) - (centres - cells)).pow(2).sum(-1) * own).sum(-1)
        return error / own.sum(-1).clamp(min=1)

    def _forced_keypoints(
        self, batch: KIBatch, rows: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Teacher forcing for the flow rows: (use bool [B', F], centres [B', F, 2]); an example is
        forced with probability keypoint_teacher_forcing, each named object it has (F = 2), and its
        goal when the expert has a goal point (F = 3)."""
        c = self.config
        labelled = self._labelled_rows(batch, "keypoint")[rows]  # [B']
        marked, centre = self._keypoint_targets(batch, rows)
        draw = torch.rand(rows.numel(), generator=generator).to(labelled.device)
        forced = labelled & (draw < c.keypoint_teacher_forcing)  # [B']
        use = marked.any(-1) & forced[:, None]
        if self.expert.goal is not None:  # the goal point is third (ActionExpert.points)
            goal, has_goal = self._goals(batch, rows)
            use = torch.cat([use, (has_goal & forced)[:, None]], dim=1)
            centre = torch.cat([centre, goal.to(centre.dtype)[:, None]], dim=1)
        return use, centre

    def _keypoint_targets(self, batch: KIBatch, rows: Tensor) -> tuple[Tensor, Tensor]:
        """What keypoints 0 / 1 of `rows` are supervised onto: (tokens bool [B', 2, N], centres
        [B', 2, 2] in [-1, 1]): the objects the instruction names first and second, or with
        keypoint_goal, for keypoint 1, the token holding the frame's goal and the goal itself."""
        c = self.config
        marked, centre = referred_objects(batch.image_labels[rows], batch.image_refs[rows],
                                          c.vision_labels, c.backbone.patch_size)  # fmt: skip
        goal, has = self._goals(batch, rows)
        if not c.keypoint_goal or not has.any():
            return marked, centre
        goal = goal.to(centre.dtype)
        g = batch.image_labels.shape[-1] // c.backbone.patch_size
        cell = ((goal + 1) / 2 * g).long().clamp(0, g - 1)  # [B', 2] (column, row)
        token = F.one_hot(cell[:, 1] * g + cell[:, 0], g * g).bool()  # [B', N]
        marked = marked.clone()
        marked[:, 1] = torch.where(has[:, None], token, marked[:, 1])
        centre = centre.clone()
        centre[:, 1] = torch.where(has[:, None], goal, centre[:, 1])
        return marked, centre

    @staticmethod
    def _goals(batch: KIBatch, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The frames' goals (x, y) in [-1, 1] float [B', 2] and which frames have one bool [B']
        (none when the batch carries no goals)."""
        if batch.image_goal is None:
            return torch.zeros(rows.numel(), 2, device=rows.device), torch.zeros_like(rows, dtype=torch.bool)
        return batch.image_goal[rows].float(), batch.loss_mask["goal"][rows]

    def image_word_logprobs(self, hidden: Tensor) -> Tensor:
        """Image tokens [B, N, W] -> float log-probabilities of the vocabulary [B, N, V] through the
        tied LM head: what the "words" readout makes each token name."""
        return F.log_softmax(self.backbone.lm_logits(F.rms_norm(hidden, hidden.shape[-1:])).float(), -1)

    def _naming_loss(self, hidden: Tensor, owners: Tensor) -> Tensor:
        """[B'] mean over the tokens that own a class of the CE of the tied LM head against the
        words naming it (half the target mass on each of two words)."""
        ids = self.label_token_ids[owners]  # [B', N, 2]
        named = ids[..., 0] >= 0
        if (self.label_token_ids < 0).all():
            raise ValueError("vision_readout 'words': call KIPolicy.set_label_words first")
        logp = self.image_word_logprobs(hidden)
        nll = -0.5 * (logp.gather(-1, ids.clamp(min=0)).sum(-1))  # [B', N]
        return (nll * named).sum(-1) / named.sum(-1).clamp(min=1)

    @staticmethod
    def _batch_mean(batch: KIBatch, name: str, per_example: Tensor) -> Tensor:
        """Every example counts the same. The denominator is the batch's own count of examples with
        this loss, or `batch.loss_denominator[name]` when the data pipeline gives one: the count of
        the whole global batch divided by its number of shards (ranks x accumulation steps), so that
        a split batch sums to exactly the loss of the unsplit one."""
        if batch.loss_denominator is not None and name in batch.loss_denominator:
            denominator = float(batch.loss_denominator[name])
        else:
            denominator = float(per_example.numel())
        return per_example.sum() / max(denominator, 1e-12)

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(
        self,
        batch: KIBatch,
        num_steps: int = 10,
        use_cache: bool = True,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Unnormalized action chunks [B, H, D] from `num_steps` Euler steps, t = 0 -> 1.

        With `use_cache` the prefix is encoded once and its K/V serve every step; without, the
        backbone is recomputed at each step (same result, for checking and benchmarking).
        """
        self.validate(batch, targets=False)
        shape = (batch.batch_size, self.config.expert.horizon, self.config.expert.action_dim)
        if noise is None:
            noise = torch.randn(shape, generator=generator).to(batch.images)
        elif noise.shape != shape:
            raise ValueError(f"noise: expected {list(shape)}, got {list(noise.shape)}")
        if use_cache:
            cache = self.encode_prefix(batch)
            context = self.expert.context(cache, shape[1], noise.dtype)

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            if use_cache:
                return self.expert(cache, x, t, batch.state, context)
            return self.expert(self.encode_prefix(batch), x, t, batch.state)

        return self.unnormalize_actions(flow.integrate(velocity, noise, num_steps))

    def num_parameters(self) -> dict[str, int]:
        return {
            "backbone": sum(p.numel() for p in self.backbone.parameters()),
            "expert": sum(p.numel() for p in self.expert.parameters()),
        }
