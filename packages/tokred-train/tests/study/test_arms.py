"""Study arms: names in the config's policy syntax, their runs and overrides, bad names."""

from __future__ import annotations

import pytest
from tokred_core import TokredError
from tokred_train import load_config
from tokred_train.study.arms import DEFAULT_ARMS, parse_arm, parse_arms


def test_an_arm_names_a_policy_per_task_and_a_sharing_mode():
    arm = parse_arm("himix:start_layer=1+hmgen:num_shallow=1@task")
    assert (arm.understanding, arm.generation, arm.sharing) == (
        "himix:start_layer=1",
        "hmgen:num_shallow=1",
        "task",
    )
    kinds = [spec.kind for spec in arm.runs()]
    assert kinds == ["unified", "isolated-understanding", "isolated-generation"]
    cfg = load_config({}, arm.overrides(arm.runs()[1]))
    assert cfg.data.train_tasks == ["understanding"]
    assert cfg.reduction.understanding.options == {"start_layer": 1}
    assert cfg.reduction.sharing == "task"


def test_the_baseline_comes_first_and_is_added_when_missing():
    arms = parse_arms(["himix+hmgen@task"])
    assert [a.name for a in arms] == ["baseline", "himix+hmgen@task"]
    assert arms[0].is_baseline
    assert [a.name for a in parse_arms(list(DEFAULT_ARMS))][0] == "baseline"


@pytest.mark.parametrize(
    "name, message",
    [
        ("fast", "expected 'baseline'"),
        ("himix+hmgen@all", "sharing 'all'"),
        ("himix@task", "name a policy for each task"),
        ("hmgen+himix@task", "cannot serve generation"),
        ("himix:nope=1+hmgen@task", "nope"),
        ("warp+hmgen@task", "warp"),
    ],
)
def test_bad_arms_are_named(name, message):
    with pytest.raises(TokredError, match=message):
        parse_arm(name)


def test_an_arm_named_twice_is_refused():
    with pytest.raises(TokredError, match="named twice"):
        parse_arms(["himix+hmgen@task", "himix+hmgen@task"])


def test_runs_that_train_the_same_share_an_identity():
    share_all = parse_arm("himix+hmgen@modality")
    share_partial = parse_arm("himix+hmgen@task")
    other_gen = parse_arm("himix+hmgen:num_shallow=1@task")
    unified, und, gen = share_all.runs()
    # Isolated runs: one task's policy, and task sharing trains as modality sharing does.
    assert share_all.run_identity(und) == share_partial.run_identity(und)
    assert share_all.run_identity(gen) == share_partial.run_identity(gen)
    assert other_gen.run_identity(und) == share_partial.run_identity(und)
    assert other_gen.run_identity(gen) != share_partial.run_identity(gen)
    # Unified runs read both policies and the sharing mode.
    assert share_all.run_identity(unified) != share_partial.run_identity(unified)
    # Shared projections are a different model from separate ones.
    assert parse_arm("himix+hmgen@shared").run_identity(und) != share_all.run_identity(und)
    assert parse_arm("baseline").run_identity(und) != share_all.run_identity(und)
