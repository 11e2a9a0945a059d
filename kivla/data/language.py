"""Language data from the world's scenes: captions, VQA with exact answers, and text-only examples.

This is the "web data" of the built-in world (DESIGN.md §3). Every example is a function of the
seed; the stream is unbounded. Question types: color, shape, count, left_right, relation
(above/below), nearest (object nearest the gripper); any can be held out of training with
`exclude_question_types`. Questions that would be ambiguous in a scene are never asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kivla.data.example import Example
from kivla.data.world_scene import COLOR_NAMES, SHAPES, Renderer, Scene, object_labels, sample_scene

KINDS: tuple[str, ...] = ("caption", "vqa", "text")
QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "left_right", "relation", "nearest")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
NEAREST_WORDS: tuple[str, ...] = ("nearest",)  # ask for the object nearest the first name
MARGIN = 0.08  # minimum separation for a spatial question to have one exact answer

CAPTION_PROMPTS = ("caption:", "describe the image.")
CAPTION_TEMPLATES = ("{objects}.", "there are {count} objects: {objects}.")
QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": ("what color is the {shape}?",),
    "shape": ("what shape is the {color} object?",),
    "count": (
        "how many objects are there?",
        "how many {color} objects are there?",
        "how many {shape}s are there?",
    ),
    "left_right": ("is the {a} left or right of the {b}?",),
    "relation": ("is the {a} above or below the {b}?",),
    "nearest": ("which object is nearest the gripper?",),
}
TEXT_FACT = "the {a} is {relation} the {b}."
TEXT_PROMPT = "{facts} question: {question}"
RELATION_WORDS = ("left of", "right of", "above", "below", "left", "right", "the")


@dataclass
class LanguageExample:
    """One caption / VQA / text example; `image` is None for text-only examples."""

    image: np.ndarray | None  # uint8 [S, S, 3]
    prompt: str
    answer: str
    kind: str  # caption | vqa:<question type> | text
    labels: np.ndarray | None = None  # uint8 [S, S] Renderer.label_map of the image
    refs: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # label classes a question refers to

    def to_example(self) -> Example:
        """The training `Example` (LM loss; dense image labels when the image has them)."""
        refs = self.refs if self.labels is not None else None
        return Example(prompt=self.prompt, image=self.image, answer=self.answer, kind=self.kind, lm=True,
                       image_labels=self.labels, image_refs=refs)  # fmt: skip


def caption(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """(prompt, answer): the objects listed from left to right."""
    order = np.argsort(scene.positions[:, 0])
    names = [f"{'an' if scene.name(i)[0] in 'aeiou' else 'a'} {scene.name(i)}" for i in order]
    objects = ", ".join(names[:-1]) + " and " + names[-1]
    text = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    answer = text.format(objects=objects, count=NUMBER_WORDS[scene.num_objects])
    return CAPTION_PROMPTS[rng.integers(len(CAPTION_PROMPTS))], answer


def _pair(scene: Scene, rng: np.random.Generator, axis: int) -> tuple[int, int] | None:
    i, j = rng.permutation(scene.num_objects)[:2]
    if abs(scene.positions[i, axis] - scene.positions[j, axis]) < MARGIN:
        return None
    return int(i), int(j)


Refs = tuple[tuple[int, ...], tuple[int, ...]]  # object ids a question refers to: (first, second)


def question(scene: Scene, qtype: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """(question, exact answer) of type `qtype`, or None when this scene has no unambiguous one."""
    grounded = grounded_question(scene, qtype, rng)
    return None if grounded is None else grounded[:2]


def grounded_question(scene: Scene, qtype: str, rng: np.random.Generator) -> tuple[str, str, Refs] | None:
    """`question`, plus the objects it refers to: (the named / counted / answered objects, the
    second object of a spatial comparison). These are the targets of the referring loss."""
    colors = [COLOR_NAMES[c] for c in scene.colors]
    shapes = [SHAPES[s] for s in scene.shapes]
    if qtype == "color":
        unique = [i for i, s in enumerate(shapes) if shapes.count(s) == 1]
        if not unique:
            return None
        i = unique[rng.integers(len(unique))]
        return QUESTIONS["color"][0].format(shape=shapes[i]), colors[i], ((i,), ())
    if qtype == "shape":
        unique = [i for i, c in enumerate(colors) if colors.count(c) == 1]
        if not unique:
            return None
        i = unique[rng.integers(len(unique))]
        return QUESTIONS["shape"][0].format(color=colors[i]), shapes[i], ((i,), ())
    if qtype == "count":
        form = int(rng.integers(3))
        color, shape = COLOR_NAMES[rng.integers(len(COLOR_NAMES))], SHAPES[rng.integers(len(SHAPES))]
        counted = [
            i for i in range(scene.num_objects) if (True, colors[i] == color, shapes[i] == shape)[form]
        ]
        text = QUESTIONS["count"][form].format(color=color, shape=shape)
        return text, NUMBER_WORDS[len(counted)], (tuple(counted), ())
    if qtype in ("left_right", "relation"):
        axis = 0 if qtype == "left_right" else 1
        pair = _pair(scene, rng, axis)
        if pair is None:
            return None
        i, j = pair
        first = scene.positions[i, axis] < scene.positions[j, axis]
        answer = ("left" if first else "right") if axis == 0 else ("above" if first else "below")
        return QUESTIONS[qtype][0].format(a=scene.name(i), b=scene.name(j)), answer, ((i,), (j,))
    if qtype == "nearest":
        dist = np.linalg.norm(scene.positions - scene.ee[:2], axis=1)
        order = np.argsort(dist)
        if dist[order[1]] - dist[order[0]] < MARGIN / 2:
            return None
        nearest = int(order[0])
        return QUESTIONS["nearest"][0], f"the {scene.name(nearest)}", ((nearest,), ())
    raise ValueError(f"question type: expected one of {QUESTION_TYPES}, got {qtype!r}")


def text_example(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """A text-only reasoning example: facts about a scene, then a question answered from them."""
    pair = _pair(scene, rng, 0)
    if pair is None:
        return None
    i, j = pair
    left = scene.positions[i, 0] < scene.positions[j, 0]
    fact = TEXT_FACT.format(a=scene.name(i), relation="left of" if left else "right of", b=scene.name(j))
    # Asking about the reversed pair needs the inverse relation: a step of reasoning, no image.
    q = QUESTIONS["left_right"][0].format(a=scene.name(j), b=scene.name(i))
    return TEXT_PROMPT.format(facts=fact, question=q), "right" if left else "left"


def language_examples(
    seed: int,
    n: int | None = None,
    kinds: tuple[str, ...] = KINDS,
    exclude_question_types: tuple[str, ...] = (),
    image_size: int = 64,
) -> Iterator[LanguageExample]:
    """Seeded stream of examples (unbounded when n is None), kinds drawn uniformly from `kinds`."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds: expected a non-empty subset of {KINDS}, got {kinds}")
    qtypes = [q for q in QUESTION_TYPES if q not in exclude_question_types]
    unknown = [q for q in exclude_question_types if q not in QUESTION_TYPES]
    if unknown:
        raise ValueError(f"exclude_question_types: unknown {unknown}; expected some of {QUESTION_TYPES}")
    if "vqa" in kinds and not qtypes:
        raise ValueError("exclude_question_types: every question type is excluded but kinds has 'vqa'")
    renderer = Renderer(image_size)
    rng = np.random.default_rng([seed, 7])
    count = 0
    while n is None or count < n:
        kind = kinds[rng.integers(len(kinds))]
        scene = sample_scene(rng, int(rng.integers(2, 5)))
        scene.ee[:2] = rng.uniform(0.05, 0.95, size=2)
        scene.ee[2] = rng.uniform(0.3, 1.0)
        if kind == "caption":
            pair, label = caption(scene, rng), "caption"
        elif kind == "vqa":
            qtype = qtypes[rng.integers(len(qtypes))]
            grounded, label = grounded_question(scene, qtype, rng), f"vqa:{qtype}"
            pair = None if grounded is None else grounded[:2]
            if grounded is not None:  # objects -> their label classes (unique within a scene)
                classes = object_labels(scene)
                refs = tuple(tuple(int(classes[i]) for i in ids) for ids in grounded[2])
        else:
            pair, label = text_example(scene, rng), "text"
        if pair is None:
            continue
        if kind != "vqa":
            refs = ((), ())
        image = None if kind == "text" else renderer.render(scene)
        labels = None if kind == "text" else renderer.label_map(scene)
        yield LanguageExample(image=image, prompt=pair[0], answer=pair[1], kind=label, labels=labels,
                              refs=refs)  # fmt: skip
        count += 1


def split_words(text: str) -> list[str]:
    """Words and punctuation marks, the units of the world's word-level vocabulary."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def corpus_words() -> list[str]:
    """Every word or punctuation mark the world can say (instructions, captions, VQA, text), sorted."""
    from kivla.data.world_tasks import DIRECTIONS, REGIONS, TEMPLATES

    texts = [*CAPTION_PROMPTS, *CAPTION_TEMPLATES, TEXT_FACT, TEXT_PROMPT, *RELATION_WORDS]
    texts += [q for qs in QUESTIONS.values() for q in qs]
    texts += [t for ts in TEMPLATES.values() for t in ts]
    texts += [*COLOR_NAMES, *SHAPES, *(f"{s}s" for s in SHAPES), *NUMBER_WORDS, *REGIONS, *DIRECTIONS]
    texts += ["a", "an", "and", ",", "above", "below"]
    words = set()
    for text in texts:
        words.update(split_words(re.sub(r"\{\w+\}\w*", " ", text)))
    return sorted(words)
