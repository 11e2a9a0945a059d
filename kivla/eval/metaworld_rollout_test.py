import json
from importlib.util import find_spec

import numpy as np
import pytest

from kivla.cli import main
from kivla.eval.metaworld_baselines import MetaWorldExpertPolicy, MetaWorldRandomPolicy
from kivla.eval.metaworld_rollout import MetaWorldEvalConfig, evaluate_metaworld
from kivla.model.testing import save_tiny_world_bundle

# Skipped only where the extra is missing (`make test` installs it); a skipif, not importorskip:
# importing metaworld would load mujoco before kivla sets MUJOCO_GL.
pytestmark = pytest.mark.skipif(find_spec("metaworld") is None, reason="pip install kivla[metaworld]")


def test_expert_succeeds_and_saves_a_video(tmp_path):
    config = MetaWorldEvalConfig(tasks=("reach",), episodes=2, num_envs=2, image_size=64, videos=1)
    result = evaluate_metaworld(MetaWorldExpertPolicy(), config, out_dir=tmp_path)
    summary = result.summary()
    assert summary["tasks"]["reach-v3"]["success_rate"] == 1.0
    assert summary["groups"]["easy"]["episodes"] == 2 and summary["all"]["mean_length"] < 150
    assert [e.config_index for e in result.episodes] == [0, 1]
    assert len(result.videos) == 1 and result.videos[0].endswith("reach-v3_success.mp4")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["summary"]["all"]["success_rate"] == 1.0


def test_random_runs_to_the_limit_and_bad_chunks_raise():
    config = MetaWorldEvalConfig(tasks=("push",), episodes=2, num_envs=1, max_steps=15, image_size=64)
    result = evaluate_metaworld(MetaWorldRandomPolicy(seed=0), config)
    everything = result.summary()["all"]
    assert [e.length for e in result.episodes] == [15, 15] and everything["success_rate"] == 0.0
    # no success: no mean success length (JSON null, a dash in the table), a 0-based interval
    assert everything["mean_success_length"] is None and everything["success_ci95"][0] == 0.0
    assert "| **all** |  | 2 | 0.0% | 15.0 | – |" in result.markdown()

    class Bad:
        def act(self, obs):
            assert obs["image"].shape == (1, 64, 64, 3) and obs["state"].shape == (1, 4)
            return np.zeros((1, 5, 3))

    with pytest.raises(ValueError, match="expected actions"):
        evaluate_metaworld(Bad(), MetaWorldEvalConfig(tasks=("reach",), episodes=1, image_size=64))
    with pytest.raises(ValueError, match=r"MetaWorldEvalConfig\.episodes"):
        MetaWorldEvalConfig(episodes=0)


def test_cli_baselines_and_errors(tmp_path, capsys):
    argv = ["eval", "--env", "metaworld", "--tasks", "reach", "--episodes", "1", "--max-steps", "10"]
    assert main([*argv, "--policy", "random", "--image-size", "64", "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["env"] == "metaworld" and report["summary"]["tasks"]["reach-v3"]["mean_length"] == 10
    assert (tmp_path / "report.md").is_file() and list((tmp_path / "videos").glob("*.mp4"))
    world_bundle = save_tiny_world_bundle(tmp_path / "world_policy")  # state_dim 5: not a Meta-World policy
    assert main([*argv, "--policy", str(world_bundle), "--out", str(tmp_path / "b")]) == 2
    assert "state_dim 4" in capsys.readouterr().err
    assert main([*argv, "--policy", "random", "--tasks", "nope"]) == 2
    assert (
        main(["metaworld", "generate", "--episodes", "1", "--image-size", "20", "--out", str(tmp_path / "g")])
        == 2
    )
    assert "32..256" in capsys.readouterr().err
