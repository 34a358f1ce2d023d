"""Study arms with strategy options (issue 10): `ARM#key=value,...`, checked as the
`strategy` section; which runs they share; their overrides and run folders; named sets."""

from __future__ import annotations

import pytest
from tokred_core import TokredError
from tokred_train import load_config
from tokred_train.study.arm_sets import ARM_SETS, SYNERGY_ARMS, expand_arm_sets
from tokred_train.study.arms import (
    DEFAULT_ARMS,
    GATE_CONFLICT_EVERY,
    arm_folder,
    parse_arm,
    parse_arms,
)
from tokred_train.testing import tiny_run_config

DISTIL = "himix+hmgen@task#full_steps=0.1,distill=1"


def test_an_arm_carries_its_strategy_options_typed_and_canonical():
    arm = parse_arm(DISTIL)
    assert (arm.understanding, arm.generation, arm.sharing) == ("himix", "hmgen", "task")
    assert arm.strategy == (("distill", 1.0), ("full_steps", 0.1))
    # The same options written otherwise, or with inert ones, are the same strategy.
    same = parse_arm("himix+hmgen@task#distill=1.0, full_steps=0.10,surgery=none")
    assert same.strategy == arm.strategy
    assert parse_arm("himix+hmgen@task#distill_temperature=2").strategy == ()
    assert not parse_arm("none+none@shared#surgery=pcgrad").is_baseline


def test_strategy_options_become_config_overrides(tmp_path):
    base = tiny_run_config(tmp_path, reduction={"generation": "hmgen:num_shallow=1"})
    arm = parse_arm("himix+hmgen:num_shallow=1@task#full_steps=0.1,distill=1,surgery=pcgrad")
    unified, und, _ = arm.runs()
    cfg = load_config(base, arm.overrides(unified, base))
    assert (cfg.strategy.full_steps, cfg.strategy.distill, cfg.strategy.surgery) == (
        0.1,
        1.0,
        "pcgrad",
    )
    iso = load_config(base, arm.overrides(und, base))
    assert (iso.strategy.full_steps, iso.strategy.surgery) == (0.1, "none")


def test_a_gating_arm_measures_conflict_unless_the_config_already_does(tmp_path):
    arm = parse_arm("himix+hmgen:num_shallow=1@task#gate_threshold=0.0")
    unified, und, _ = arm.runs()
    quiet = tiny_run_config(tmp_path)
    cfg = load_config(quiet, arm.overrides(unified, quiet))
    assert (cfg.strategy.gate_threshold, cfg.run.conflict_every) == (0.0, GATE_CONFLICT_EVERY)
    measuring = tiny_run_config(tmp_path, run={"conflict_every": 7})
    assert load_config(measuring, arm.overrides(unified, measuring)).run.conflict_every == 7
    # An isolated run trains one task: no gate, and so no conflict to measure.
    assert not any("gate" in o or "conflict" in o for o in arm.overrides(und, quiet))


def test_isolated_runs_drop_what_acts_between_the_tasks():
    plain = parse_arm("himix+hmgen@task")
    unified, und, gen = plain.runs()
    for options in ("surgery=pcgrad", "gate_threshold=0.0,gate_hysteresis=0.1"):
        arm = parse_arm(f"himix+hmgen@task#{options}")
        assert arm.run_identity(und) == plain.run_identity(und)
        assert arm.run_identity(gen) == plain.run_identity(gen)
        assert arm.run_identity(unified) != plain.run_identity(unified)
    # Full steps and distillation change a run of one task too.
    distil = parse_arm(DISTIL)
    assert distil.run_identity(und) != plain.run_identity(und)
    assert distil.run_identity(und) == parse_arm(
        "himix+hmgen@modality#full_steps=0.1,distill=1"
    ).run_identity(und)
    # ...but not one whose task is unreduced (every step of it is already full).
    one_sided = parse_arm("himix+none@task#full_steps=0.1")
    assert one_sided.run_identity(gen) == parse_arm("himix+none@task").run_identity(gen)
    assert one_sided.run_identity(und) != parse_arm("himix+none@task").run_identity(und)


@pytest.mark.parametrize(
    "name, message",
    [
        ("himix+hmgen@task#full_steps=1.5", "strategy.full_steps: 1.5 is outside \\[0, 1\\]"),
        ("himix+hmgen@task#gate_threshold=-2", "strategy.gate_threshold: -2.0 is outside"),
        ("himix+hmgen@task#warp=1", "strategy.warp: unknown key"),
        ("himix+hmgen@task#surgery=mgda", "strategy.surgery: 'mgda' must be one of"),
        ("himix+hmgen@task#distill=1", "needs full steps"),
        ("himix+hmgen@task#full_steps", "expected KEY=VALUE"),
        ("himix+hmgen@task#full_steps=0.1,full_steps=0.2", "given twice"),
        ("baseline#surgery=pcgrad", "the baseline takes no strategy options"),
        ("none+none@shared#full_steps=0.1", "reduces nothing"),
        ("himix+hmgen@everything#full_steps=0.1", "sharing 'everything'"),
    ],
)
def test_bad_strategy_options_are_one_line_naming_them(name, message):
    with pytest.raises(TokredError, match=message) as info:
        parse_arm(name)
    assert "\n" not in str(info.value) and str(info.value).count("arm '") == 1


def test_run_folders_escape_what_a_path_should_not_hold():
    assert arm_folder("himix:start_layer=1+hmgen@task") == "himix:start_layer=1+hmgen@task"
    folder = arm_folder(DISTIL)
    assert folder == "himix+hmgen@task%23full_steps=0.1%2Cdistill=1"
    assert "/" not in arm_folder("a/b") and arm_folder("a%23") != arm_folder("a#")


def test_named_sets_expand_once_and_keep_the_default():
    assert DEFAULT_ARMS == ARM_SETS["default"]
    assert expand_arm_sets(["default"]) == list(DEFAULT_ARMS)
    assert expand_arm_sets(["himix+hmgen@task", "synergy"]).count("himix+hmgen@task") == 1
    arms = parse_arms(list(SYNERGY_ARMS))
    assert arms[0].name == "baseline" and len(arms) == len(SYNERGY_ARMS)
    assert {a.sharing for a in arms} >= {"modality", "task", "aligned"}
    strategies = {k for a in arms for k, _ in a.strategy}
    assert {"full_steps", "distill", "surgery", "gate_threshold"} <= strategies
