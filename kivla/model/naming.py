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

With `naming_where`, a looking token's embedding also gets a learned linear map of where it looks
(`where`): the grid position averaged under the looked-for classes' normalized probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kivla.model.config import BackboneConfig

WHERE_SLOTS = 2  # names of the prompt whose positions an answer token holds (naming_where)


class NamingAttention(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.num_heads, self.naming_heads = config.num_heads, config.naming_heads
        self.num_image_tokens, self.vocab_size = config.num_image_tokens, config.vocab_size
        self.object_head = nn.Linear(config.width, config.naming_labels)
        self.scale = nn.Parameter(torch.ones(config.depth))
        self.where_embed = self.where_slots = None
        if config.naming_where:
            grid = config.image_size // config.patch_size
            self.where_embed = nn.Linear(2, config.width, bias=False)
            # the answer's: where the prompt's first and second names look, each its own map
            self.where_slots = nn.Linear(2 * WHERE_SLOTS, config.width, bias=False)
            for layer in (self.where_embed, self.where_slots):  # ~ the token embeddings' RMS at |xy| ~ 0.5
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

    def where(self, looks: tuple[Tensor, Tensor], ids: Tensor, prompt_mask: Tensor) -> Tensor:
        """(bias [B, L, n], looks [B, L]) from `looks`, its ids and prompt mask -> the embedding
        [B, L, W] of where each looking token looks (0 for the others). A label word: `where_embed`
        of the (column, row) in [-1, 1] averaged under softmax(bias), the looked-for classes'
        probability normalized over the image. An answer token: `where_slots` of that position for
        the prompt's first and second names (zeros for a name the prompt lacks), so that "left or
        right of" is a learned sign on a difference the answer holds from the first step."""
        if self.where_embed is None or self.where_slots is None:
            raise ValueError("NamingAttention.where: BackboneConfig.naming_where is off")
        bias, looking = looks
        _, label, answer, ends = self.roles(ids, prompt_mask)
        xy = bias.float().softmax(-1) @ self.grid_xy  # [B, L, 2]
        lp = prompt_mask.shape[1]
        order = ends.long().cumsum(1) * ends  # [B, Lp]: 1 at the first name's end, 2 at the second's, ...
        slots = torch.cat([((order == k + 1)[..., None] * xy[:, :lp]).sum(1) for k in range(WHERE_SLOTS)], -1)
        own = self.where_embed(xy) * (label & looking)[..., None]
        return own + self.where_slots(slots)[:, None] * (answer & looking)[..., None]

    def mask(self, mask: Tensor, looks: tuple[Tensor, Tensor], layer: int) -> Tensor:
        """The additive attention mask [B, 1, N, N] -> [B, heads, N, N] of layer `layer`: in the
        first `naming_heads` heads, the text queries that look attend to the image tokens only,
        their scores plus the bias times the layer's scale (`looks`: the output of `looks`)."""
        bias, looking = looks
        n, h = self.num_image_tokens, self.naming_heads
        out = mask.expand(-1, self.num_heads, -1, -1).clone()
        out[:, :h, n:, :n] += (self.scale[layer] * bias[:, None]).to(mask.dtype)
        out[:, :h, n:, n:] = out[:, :h, n:, n:].masked_fill(looking[:, None, :, None], float("-inf"))
        return out
