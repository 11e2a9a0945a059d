"""Naming attention: a word of the prompt looks at the image tokens of the objects it names.

The tiny VLM's answers found the objects but not the one a question names (docs/learning.md,
twelfth round): the question's words had to learn, through the answer loss alone, which image
features they match. Here the image stem also feeds an object head that names each image token's
label class (the world's colour x shape objects, the gripper, 0 = nothing), trained by the dense
vision loss and by stem pretraining. A text token *looks* when it is a word naming label classes
("red": the red objects; "circle" after "red": the red circles). In the first `naming_heads`
heads of every layer, a looking token attends to the image only, its scores plus

    scale[layer] * log P(object head names one of the looked-for classes at image token j),

so from the first step "circle" reads the circle's token. Every other suffix token (the answer,
FAST tokens) looks for the objects the prompt names, so "what color is the circle?" is answered
from the circle's token in one hop. The scale per layer is learned and starts at 1. The other
heads, image queries and tokens that do not look are unchanged; so is the expert, which reads only
the cache (its naming keypoints read the prompt's bias: `KIPolicy.prompt_naming`).

With `naming_where` (docs/learning.md, seventeenth round), a looking token's embedding also gets a
learned linear map of where it looks (`where`): the grid position averaged under the looked-for
classes' normalized probability; an answer token gets where the prompt's first and second names
look. `naming_count` adds how many looked-for objects the image holds, `naming_relative` each image
token's offset from the first name, `naming_near` a learned score of the objects near it.
`naming_nearest` makes the answer of "which object is nearest the gripper?" look at that object
(`look_nearest`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kivla.model.config import BackboneConfig

WHERE_SLOTS = 2  # names of the prompt whose positions an answer token holds (naming_where)
COUNT_BINS = 6  # naming_count: a count c as hat functions max(0, 1 - |c - k|), k = 0 .. 5
# naming_nearest: the softmin's temperature on squared distances in [-1, 1] grid units (objects at
# d² 0.1 and 0.2 from the first name differ by e^-2 in weight)
NEAR_TEMPERATURE = 0.05


def count_bins(count: Tensor) -> Tensor:
    """float [...] -> [..., COUNT_BINS]: each whole number its own direction, fractions between."""
    k = torch.arange(COUNT_BINS, dtype=count.dtype, device=count.device)
    return (1 - (count[..., None] - k).abs()).clamp(min=0)


class NamingAttention(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.num_heads, self.naming_heads = config.num_heads, config.naming_heads
        self.num_image_tokens, self.vocab_size = config.num_image_tokens, config.vocab_size
        self.object_head = nn.Linear(config.width, config.naming_labels)
        self.scale = nn.Parameter(torch.ones(config.depth))
        self.where_embed = self.where_slots = self.where_scene = self.where_relative = None
        self.count = config.naming_count
        # naming_near: per layer, the weights of (other object, other object x squared distance from
        # the first name) in the scores of answer tokens on image tokens in head `naming_heads`
        self.near = nn.Parameter(torch.zeros(config.depth, 2)) if config.naming_near else None
        if config.naming_where:
            grid = config.image_size // config.patch_size
            point = 2 + COUNT_BINS * self.count  # (column, row[, how many looked-for objects])
            self.where_embed = nn.Linear(point, config.width, bias=False)
            # the answer's: where the prompt's first and second names look, each its own map
            self.where_slots = nn.Linear(point * WHERE_SLOTS, config.width, bias=False)
            layers = [self.where_embed, self.where_slots]
            if self.count:  # every suffix token of an image example: how many objects it holds
                self.where_scene = nn.Linear(COUNT_BINS, config.width, bias=False)
                layers.append(self.where_scene)
            if config.naming_relative:  # image tokens: (dx, dy, dx² + dy²) from the first name
                self.where_relative = nn.Linear(3, config.width, bias=False)
                layers.append(self.where_relative)
            for layer in layers:  # ~ the token embeddings' RMS at |xy| ~ 0.5
                nn.init.normal_(layer.weight, std=0.05)
            steps = torch.linspace(-1.0, 1.0, grid)
            rows, cols = torch.meshgrid(steps, steps, indexing="ij")
            # [n, 2]: (column, row) of each image token, row-major as the stem orders them
            xy = torch.stack([cols.flatten(), rows.flatten()], -1)
            self.register_buffer("grid_xy", xy, persistent=False)
        # class_words[v, c]: vocabulary word v names label class c (`set_class_words`)
        self.register_buffer(
            "class_words", torch.zeros(config.vocab_size, config.naming_labels, dtype=torch.bool)
        )
        # naming_nearest: near_words[v], vocabulary word v asks for the object nearest the first name
        near_words = torch.zeros(config.vocab_size, dtype=torch.bool) if config.naming_nearest else None
        self.register_buffer("near_words", near_words)

    def set_class_words(self, class_word_ids: list[list[int]]) -> None:
        """The vocabulary ids of the words naming each label class (index = class; [] for none)."""
        if len(class_word_ids) != self.class_words.shape[1]:
            raise ValueError(
                f"class words: expected {self.class_words.shape[1]} classes, got {len(class_word_ids)}"
            )
        self.class_words.zero_()
        for label, ids in enumerate(class_word_ids):
            for i in ids:
                if i is None or not 0 <= i < self.vocab_size:
                    raise ValueError(f"class words: id {i} of class {label} is outside the vocabulary")
                self.class_words[i, label] = True

    def set_near_words(self, ids: list[int]) -> None:
        """The vocabulary ids of the words that ask for the object nearest the first name."""
        if self.near_words is None:
            raise ValueError("NamingAttention.set_near_words: BackboneConfig.naming_nearest is off")
        bad = [i for i in ids if i is None or not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"near words: ids {bad} are outside the vocabulary of {self.vocab_size}")
        self.near_words.zero_()
        self.near_words[list(ids)] = True

    def object_logits(self, stem: Tensor) -> Tensor:
        """The stem's output [B, n, W] -> label-class logits [B, n, classes] (on the RMS-normed
        tokens, as stem pretraining reads them)."""
        return self.object_head(F.rms_norm(stem.float(), stem.shape[-1:]))

    def looks(
        self, object_logits: Tensor, ids: Tensor, prompt_mask: Tensor, image_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """object_logits [B, n, C]; ids long [B, L]: the prompt [B, Lp] (valid where `prompt_mask`)
        then the suffix; image_mask bool [B] -> (bias [B, L, n], looks bool [B, L]).

        A word naming label classes looks for the classes that it and a label word just before it
        both name ("circle" after "red": the red circles). Every other suffix token (the answer,
        the action tokens) looks for the objects the prompt names: the classes of the prompt's
        label words that end a name ("red circle", not "red"). The bias is the log of the
        probability of the looked-for classes at each image token, 0 where a token does not look;
        nothing looks in an example without an image."""
        probs = object_logits.float().softmax(-1)
        classes, label, answer, _ = self.roles(ids, prompt_mask)
        looks = (label | answer) & image_mask[:, None]
        mass = torch.einsum("bnc,blc->bln", probs, classes.float())
        return torch.where(looks[..., None], mass.clamp(min=1e-4).log(), 0.0), looks

    def roles(self, ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ids long [B, L] (prompt [B, Lp] then suffix) -> (the classes each token looks for
        bool [B, L, C], label words bool [B, L], answer tokens bool [B, L], the prompt's name ends
        bool [B, Lp]): the rule of `looks`."""
        lp = prompt_mask.shape[1]
        words = self.class_words[ids]  # [B, L, C]
        label = words.any(-1)  # [B, L]
        previous = torch.cat([torch.zeros_like(words[:, :1]), words[:, :-1]], dim=1)
        classes = words & (previous | ~previous.any(-1, keepdim=True))  # [B, L, C]
        follows = torch.cat([label[:, 1:], torch.zeros_like(label[:, :1])], dim=1)  # a label word comes next
        ends_name = (label & ~follows)[:, :lp] & prompt_mask  # [B, Lp]
        named = (classes[:, :lp] & ends_name[..., None]).any(1, keepdim=True)  # [B, 1, C]
        answer = ~label & named.any(-1)  # [B, L]
        answer[:, :lp] = False
        return torch.where(answer[..., None], named, classes), label, answer, ends_name

    def where(
        self,
        object_logits: Tensor,
        looks: tuple[Tensor, Tensor],
        ids: Tensor,
        prompt_mask: Tensor,
        image_mask: Tensor,
    ) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """`looks`' inputs and output -> (what the image tokens get [B, n, W] or None, what the text
        tokens get [B, L, W], 0 for tokens that do not look; the `near` features [B, L, n, 2] or None).

        A label word gets `where_embed` of the (column, row) in [-1, 1] averaged under softmax(bias),
        the looked-for classes' probability normalized over the image. An answer token gets
        `where_slots` of that position for the prompt's first and second names (zeros for a name
        the prompt lacks), so that "left or right of" is a learned sign on a difference the answer
        holds from the first step. With `naming_count` each point also carries the looked-for
        classes' probability summed over the image (as `count_bins`): how many such objects it
        holds, since each object owns one token (`kivla.model.vision.object_tokens`); and every
        suffix token of an example with an image gets `where_scene` of how many objects (and
        gripper) it holds. With `naming_relative` every image token gets `where_relative` of its
        offset from the prompt's first name and the offset's squared length ("nearest the
        gripper"). With `naming_near` an answer token's features of each image token are how much
        of an object the prompt does not name it holds, and that times its squared distance from
        the first name: `mask` weighs them into head `naming_heads`'s scores with weights learned
        per layer from 0, so "the object nearest the gripper" is a learned linear score."""
        if self.where_embed is None or self.where_slots is None:
            raise ValueError("NamingAttention.where: BackboneConfig.naming_where is off")
        bias, looking = looks
        _, label, answer, ends = self.roles(ids, prompt_mask)
        points = [bias.float().softmax(-1) @ self.grid_xy]  # [B, L, 2]
        if self.count:
            points.append(count_bins(bias.float().exp().sum(-1)) * looking[..., None])  # [B, L, bins]
        point = torch.cat(points, -1)  # [B, L, 2 (+ bins)]
        lp = prompt_mask.shape[1]
        order = ends.long().cumsum(1) * ends  # [B, Lp]: 1 at the first name's end, 2 at the second's, ...
        first = [(order == k + 1)[..., None].float() for k in range(WHERE_SLOTS)]  # [B, Lp, 1] each
        slots = torch.cat([(f * point[:, :lp]).sum(1) for f in first], -1)  # [B, slots * point]
        text = self.where_embed(point) * (label & looking)[..., None]
        text = text + self.where_slots(slots)[:, None] * (answer & looking)[..., None]
        things = 1 - object_logits.float().softmax(-1)[..., 0]  # [B, n]: anything but the table
        if self.where_scene is not None:
            suffix = torch.zeros_like(looking)
            suffix[:, lp:] = image_mask[:, None]
            text = text + self.where_scene(count_bins(things.sum(-1)))[:, None] * suffix[..., None]
        offset = self.grid_xy - slots[:, None, :2]  # [B, n, 2]: from where the first name looks
        image = None
        if self.where_relative is not None:
            named = ends.any(1) & image_mask  # [B]
            relative = torch.cat([offset, offset.square().sum(-1, keepdim=True)], -1)
            image = self.where_relative(relative) * named[:, None, None]
        near = None
        if self.near is not None:
            distance = offset.square().sum(-1)  # [B, n]
            other = (things[:, None] - bias.float().exp()).clamp(min=0)  # [B, L, n]: not named
            other = other * (answer & looking & ends.any(1, keepdim=True))[..., None]
            near = torch.stack([other, other * distance[:, None]], -1)
        return image, text, near

    def look_nearest(
        self, object_logits: Tensor, looks: tuple[Tensor, Tensor], ids: Tensor, prompt_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`looks` with the answer's tokens of prompts holding a near word looking at the object
        nearest the prompt's first name among those the prompt does not name: their bias over the
        image tokens [B, L, n] becomes the log of a softmin of squared distances (NEAR_TEMPERATURE)
        over the tokens where the object head gives more than half a thing the prompt does not
        name. Other tokens, prompts without a near word or without such an object keep theirs."""
        if self.near_words is None:
            raise ValueError("NamingAttention.look_nearest: BackboneConfig.naming_nearest is off")
        bias, looking = looks
        lp = prompt_mask.shape[1]
        classes, _, answer, ends = self.roles(ids, prompt_mask)
        first = ends & (ends.long().cumsum(1) == 1)  # [B, Lp]: the first name's end
        points = bias[:, :lp].float().softmax(-1) @ self.grid_xy  # [B, Lp, 2]: where each word looks
        where = (first[..., None].float() * points).sum(1)  # [B, 2]
        probs = object_logits.float().softmax(-1)  # [B, n, C]
        named = (classes[:, :lp] & ends[..., None]).any(1).float()  # [B, C]
        things = 1 - probs[..., 0] - torch.einsum("bnc,bc->bn", probs, named)  # [B, n]: not named
        unnamed = things > 0.5
        score = -(self.grid_xy - where[:, None]).square().sum(-1) / NEAR_TEMPERATURE  # [B, n]
        nearest = score.masked_fill(~unnamed, -1e4).log_softmax(-1).clamp(min=math.log(1e-4))
        asks = (self.near_words[ids[:, :lp]] & prompt_mask).any(1) & first.any(1) & unnamed.any(1)  # [B]
        rows = answer & looking & asks[:, None]  # [B, L]
        return torch.where(rows[..., None], nearest[:, None].to(bias.dtype), bias), looking

    def mask(
        self, mask: Tensor, looks: tuple[Tensor, Tensor], layer: int, near: Tensor | None = None
    ) -> Tensor:
        """The additive attention mask [B, 1, N, N] -> [B, heads, N, N] of layer `layer`: in the
        first `naming_heads` heads, the text queries that look attend to the image tokens only,
        their scores plus the bias times the layer's scale (`looks`: the output of `looks`); with
        `near` (from `where`), head `naming_heads`'s text scores on the image tokens plus `near`
        weighed by the layer's `near` weights."""
        bias, looking = looks
        n, h = self.num_image_tokens, self.naming_heads
        out = mask.expand(-1, self.num_heads, -1, -1).clone()
        out[:, :h, n:, :n] += (self.scale[layer] * bias[:, None]).to(mask.dtype)
        if near is not None and self.near is not None:
            out[:, h, n:, :n] += (near @ self.near[layer]).to(mask.dtype)
        out[:, :h, n:, n:] = out[:, :h, n:, n:].masked_fill(looking[:, None, :, None], float("-inf"))
        return out
