"""`tokred study` with strategy arms (issue 10): a bad strategy option is one line and
exit 2 before anything trains; the Pareto figure of synergy kept against cost is drawn
from what study.json holds."""

from __future__ import annotations

import pytest
from tokred.cli import main
from tokred.study_figures import plot_pareto
from tokred_train import save_config
from tokred_train.testing import tiny_run_config


@pytest.fixture
def tiny_recipe(tmp_path):
    config = tiny_run_config(tmp_path / "unused", optim={"max_steps": 2})
    return str(save_config(config, tmp_path / "tiny.yaml"))


@pytest.mark.parametrize(
    "arm, message",
    [
        ("himix+hmgen:num_shallow=1@task#full_steps=2", "strategy.full_steps: 2.0 is outside"),
        ("himix+hmgen:num_shallow=1@task#gate_threshold=1.5", "strategy.gate_threshold"),
        ("himix+hmgen:num_shallow=1@task#speed=11", "strategy.speed: unknown key"),
        ("baseline#surgery=pcgrad", "the baseline takes no strategy options"),
    ],
)
def test_a_bad_strategy_option_is_one_line_and_exit_2(tiny_recipe, tmp_path, capsys, arm, message):
    out = tmp_path / "study"
    assert main(["study", tiny_recipe, "--out", str(out), "--arms", arm]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokred: error: ") and message in err[0]
    assert not (out / "runs").exists()


def _est(mean, half=0.05):
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": 3}


def test_the_pareto_figure_shows_every_arm_and_task(tmp_path):
    def arm(kept_u, kept_g, flops, time):
        return {
            "synergy_kept": {"understanding": _est(kept_u), "generation": {"mean": kept_g, "low": None, "high": None}},
            "cost": {"unified": {"flops_ratio": _est(flops, 0.0), "step_time_ratio": _est(time)}},
        }  # fmt: skip

    study = {
        "arms": {
            "baseline": {"synergy_kept": {}, "cost": {"unified": {}}},
            "himix+hmgen@task#full_steps=0.1,distill=1": arm(0.8, 0.4, 0.85, 1.05),
            "himix+hmgen@task#surgery=pcgrad": arm(0.95, 1.2, 0.79, 0.97),
        },
        "findings": {"goal": {"tasks": ["understanding"]}},
    }
    path = plot_pareto(study, tmp_path / "figures" / "synergy_pareto.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["synergy_pareto.png"]  # no temp left
