"""Language data: exact answers on hand-built scenes, seeding, held-out question types, vocabulary."""

import numpy as np
import pytest

from kivla.data.language import (
    QUESTION_TYPES,
    caption,
    corpus_words,
    language_examples,
    question,
    split_words,
    text_example,
)
from kivla.data.world_scene import Scene


def _scene() -> Scene:
    # red circle left-top, blue square right-middle, red triangle center-bottom; gripper near the square
    return Scene(
        positions=np.array([[0.25, 0.25], [0.75, 0.5], [0.5, 0.75]]),
        colors=np.array([0, 2, 0]),
        shapes=np.array([0, 1, 2]),
        ee=np.array([0.8, 0.45, 1.0, 1.0]),
    )


def _all_answers(qtype: str, n: int = 60) -> dict[str, set[str]]:
    rng = np.random.default_rng(0)
    out: dict[str, set[str]] = {}
    for _ in range(n):
        qa = question(_scene(), qtype, rng)
        if qa is not None:
            out.setdefault(qa[0], set()).add(qa[1])
    return out


def test_exact_answers_on_a_known_scene():
    assert _all_answers("color") == {
        "what color is the circle?": {"red"},
        "what color is the square?": {"blue"},
        "what color is the triangle?": {"red"},
    }
    assert _all_answers("shape") == {"what shape is the blue object?": {"square"}}  # red is ambiguous
    counts = _all_answers("count", 200)
    assert counts["how many objects are there?"] == {"three"}
    assert counts["how many red objects are there?"] == {"two"}
    assert counts["how many green objects are there?"] == {"zero"}
    assert counts["how many circles are there?"] == {"one"}
    lr = _all_answers("left_right")
    assert lr["is the red circle left or right of the blue square?"] == {"left"}
    assert lr["is the blue square left or right of the red triangle?"] == {"right"}
    rel = _all_answers("relation")
    assert rel["is the red circle above or below the red triangle?"] == {"above"}
    assert _all_answers("nearest") == {"which object is nearest the gripper?": {"the blue square"}}
    _, cap = caption(_scene(), np.random.default_rng(0))
    assert "a red circle, a red triangle and a blue square" in cap  # left to right


def test_ambiguous_questions_are_not_asked():
    scene = _scene()
    scene.positions[1] = [0.27, 0.6]  # square almost above the circle: left/right ambiguous for that pair
    rng = np.random.default_rng(1)
    for _ in range(100):
        qa = question(scene, "left_right", rng)
        if qa is not None:
            assert not ("circle" in qa[0] and "square" in qa[0])


def test_text_examples_need_the_inverse_relation():
    prompt, answer = text_example(_scene(), np.random.default_rng(3)) or text_example(
        _scene(), np.random.default_rng(4)
    )
    assert "question:" in prompt and answer in ("left", "right")
    fact = prompt.split(" question:")[0]
    assert (" left of " in fact) == (answer == "right")


def test_stream_is_seeded_and_mixed():
    a = list(language_examples(seed=5, n=60))
    b = list(language_examples(seed=5, n=60))
    assert [(e.prompt, e.answer, e.kind) for e in a] == [(e.prompt, e.answer, e.kind) for e in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True) if x.image is not None)
    c = list(language_examples(seed=6, n=60))
    assert [e.prompt + e.answer for e in a] != [e.prompt + e.answer for e in c]
    kinds = {e.kind.split(":")[0] for e in a}
    assert kinds == {"caption", "vqa", "text"}
    for e in a:
        assert (e.image is None) == (e.kind == "text")
        ex = e.to_example()
        assert ex.lm and not ex.flow and not ex.fast and ex.answer == e.answer


def test_excluded_question_types_never_appear():
    examples = list(
        language_examples(seed=0, n=300, kinds=("vqa",), exclude_question_types=("nearest", "count"))
    )
    seen = {e.kind for e in examples}
    assert "vqa:nearest" not in seen and "vqa:count" not in seen
    assert len(seen) == len(QUESTION_TYPES) - 2
    with pytest.raises(ValueError, match="exclude_question_types"):
        next(language_examples(0, 1, exclude_question_types=("colour",)))
    with pytest.raises(ValueError, match="kinds"):
        next(language_examples(0, 1, kinds=("poem",)))


def test_corpus_covers_everything_the_world_says():
    from kivla.data.world_env import TabletopEnv

    vocab = set(corpus_words())
    words = set()
    for e in language_examples(seed=2, n=500):
        words.update(split_words(e.prompt + " " + e.answer))
    env = TabletopEnv()
    for seed in range(300):
        _, info = env.reset(seed, {"split": "ood" if seed % 2 else "train"})
        words.update(split_words(info["task"].instruction))
    assert words <= vocab, sorted(words - vocab)
    assert len(vocab) < 100  # a small closed vocabulary


def test_grounded_questions_refer_to_the_right_objects():
    from kivla.data.language import grounded_question

    rng = np.random.default_rng(0)
    scene = _scene()
    for _ in range(40):
        q, a, (first, second) = grounded_question(scene, "color", rng)
        assert len(first) == 1 and scene.name(first[0]).endswith(q.split()[-1].rstrip("?")) and not second
        got = grounded_question(scene, "left_right", rng)
        if got is not None:
            q, _, ((i,), (j,)) = got
            assert q == f"is the {scene.name(i)} left or right of the {scene.name(j)}?"
        q, a, (counted, _) = grounded_question(scene, "count", rng)
        assert a == ("zero", "one", "two", "three", "four")[len(counted)]
    q, a, ((nearest,), _) = grounded_question(scene, "nearest", rng)
    assert a == f"the {scene.name(nearest)}" == "the blue square"


def test_language_examples_carry_labels_and_refs():
    for ex in language_examples(5, 30, image_size=32):
        if ex.kind == "text":
            assert ex.labels is None and ex.image is None
            continue
        assert ex.labels.shape == (32, 32)
        example = ex.to_example()
        assert example.image_labels is ex.labels
        assert any(ex.refs) == (ex.kind.startswith("vqa:") and ex.answer != "zero")
        # Referred classes are drawn in the image (a counted class may be absent: "how many ... zero").
        if ex.kind != "vqa:count":
            assert all(set(r) <= set(np.unique(ex.labels).tolist()) for r in ex.refs)
