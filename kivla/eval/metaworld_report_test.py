import json

import pytest

from kivla.eval.metaworld_report import comparison_markdown, load_summary
from kivla.eval.metaworld_rollout import MetaWorldEpisode, MetaWorldEvalResult
from kivla.io import write_json


def result(successes: dict[str, list[bool]]) -> MetaWorldEvalResult:
    episodes = [
        MetaWorldEpisode(task, "easy" if task == "reach-v3" else "hard", i, ok, 50 if ok else 500)
        for task, wins in successes.items()
        for i, ok in enumerate(wins)
    ]
    return MetaWorldEvalResult(config={}, episodes=episodes)


def test_comparison_has_a_column_per_policy_and_the_union_of_tasks(tmp_path):
    trained = result({"reach-v3": [True, True, False, False], "push-v3": [False, False]})
    expert = result({"reach-v3": [True] * 4})
    trained.save(tmp_path / "trained")
    write_json(tmp_path / "bounds.json", {"policies": {"expert": expert.to_dict()}})
    summaries = {
        "expert": load_summary(tmp_path / "bounds.json", policy="expert"),
        "ki": load_summary(tmp_path / "trained"),
    }
    text = comparison_markdown(summaries)
    assert text.index("| reach-v3 |") < text.index("| push-v3 |")  # MT10's order, not the alphabet
    assert "| task | group | expert | ki |" in text
    assert "| reach-v3 | easy | 100% | 50% |" in text
    assert "| push-v3 | hard | – | 0% |" in text  # the expert was not run on push
    assert "| **all** |  | **100.0%** (51%–100%) | **33.3%** (10%–70%) |" in text
    assert "| reach-v3 | easy | 50 | 275 |" in text  # mean lengths, a failure counts 500
    # a summary with no success stays strict JSON (no NaN)
    json.loads((tmp_path / "trained" / "eval.json").read_text(), parse_constant=pytest.fail)


def test_load_summary_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected eval\.json"):
        load_summary(tmp_path)
    write_json(tmp_path / "other.json", {"summary": {"train": {}}})
    with pytest.raises(ValueError, match="not a Meta-World evaluation"):
        load_summary(tmp_path / "other.json")
    with pytest.raises(ValueError, match="no policy 'ki'"):
        load_summary(tmp_path / "other.json", policy="ki")
