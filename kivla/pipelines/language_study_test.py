"""The pieces of the language study that need no real weights: the corpus split, the real-text mixture."""

import numpy as np
import pytest

from kivla.data.mixture import MixtureSampler
from kivla.pipelines.language_study import LanguageStudyConfig, RealTextMixture, stdlib_docstrings, study_runs


def test_stdlib_docstrings_split_by_module():
    corpus = stdlib_docstrings()
    assert len(corpus["train"]) > 100 and len(corpus["heldout"]) > 50
    assert not set(corpus["train"]) & set(corpus["heldout"])
    assert all(len(d) >= 200 for d in corpus["heldout"])


def test_real_text_mixture_is_a_pure_function_of_the_generator():
    sampler = MixtureSampler(None, {"caption": 0.5, "text": 0.5}, seed=0, image_size=32)
    mixture = RealTextMixture(sampler, ["one two three four " * 20, "five six seven eight " * 20])
    assert mixture.robot_has_labels == sampler.robot_has_labels  # the batches ask the sampler for it
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


def test_the_flow_weight_sweep_adds_naive_and_ki_runs_without_text():
    runs = study_runs(LanguageStudyConfig(recipes=("naive", "ki", "frozen"), flow_weights=(10, 100)))
    assert [name for name, *_ in runs] == [
        "naive", "naive+text", "ki", "ki+text", "frozen", "frozen+text",
        "naive@flow10", "ki@flow10", "naive@flow100", "ki@flow100",
    ]  # fmt: skip
    assert runs[-1] == ("ki@flow100", "ki", False, 100.0) and runs[1] == ("naive+text", "naive", True, 1.0)
    with pytest.raises(ValueError, match=r"LanguageStudyConfig\.flow_weights"):
        LanguageStudyConfig(flow_weights=(0.0,))
