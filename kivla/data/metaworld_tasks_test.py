import pytest

from kivla.data.metaworld_tasks import DIFFICULTY, GROUP_OF, INSTRUCTIONS, MT10, SUITES, TASKS, resolve_tasks


def test_groups_partition_the_fifty_tasks():
    grouped = [t for tasks in DIFFICULTY.values() for t in tasks]
    assert len(TASKS) == 50 and sorted(grouped) == sorted(TASKS)
    assert [len(DIFFICULTY[g]) for g in ("easy", "medium", "hard", "very_hard")] == [28, 11, 6, 5]
    assert {GROUP_OF[t] for t in MT10} == {"easy", "medium", "hard"}
    assert len(set(INSTRUCTIONS.values())) == 50  # one distinct instruction per task


def test_resolve_suites_and_names():
    assert resolve_tasks("mt10") == MT10 == SUITES["mt10"].tasks
    assert resolve_tasks("reach,push-v3,reach-v3") == ("reach-v3", "push-v3")
    assert resolve_tasks(["hard"]) == DIFFICULTY["hard"]
    with pytest.raises(ValueError, match=r"tasks: Meta-World task 'rech': unknown; did you mean 'reach"):
        resolve_tasks("rech")
    with pytest.raises(ValueError, match="at least one task"):
        resolve_tasks(" , ")
