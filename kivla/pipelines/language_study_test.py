"""The pieces of the language study that need no real weights: the corpus split, the real-text mixture."""

import numpy as np

from kivla.data.mixture import MixtureSampler
from kivla.pipelines.language_study import RealTextMixture, stdlib_docstrings


def test_stdlib_docstrings_split_by_module():
    corpus = stdlib_docstrings()
    assert len(corpus["train"]) > 100 and len(corpus["heldout"]) > 50
    assert not set(corpus["train"]) & set(corpus["heldout"])
    assert all(len(d) >= 200 for d in corpus["heldout"])


def test_real_text_mixture_is_a_pure_function_of_the_generator():
    sampler = MixtureSampler(None, {"caption": 0.5, "text": 0.5}, seed=0, image_size=32)
    mixture = RealTextMixture(sampler, ["one two three four " * 20, "five six seven eight " * 20])
    for i in range(6):
        a = mixture.draw(np.random.default_rng([0, i]))
        b = mixture.draw(np.random.default_rng([0, i]))
        source = mixture.draw_source(np.random.default_rng([0, i]))
        assert a.prompt == b.prompt and a.answer == b.answer and a.kind == b.kind
        assert (a.kind == "text") == (source == "text")
        if a.kind == "text":
            assert (
                a.image is None
                and a.lm
                and set(a.answer.split()) <= {"one", "two", "three", "four", "five", "six", "seven", "eight"}
            )
