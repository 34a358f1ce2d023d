"""Policies written as text (`NAME[:key=value...]`, `TASK=NAME[,TASK=NAME...]`): the one
grammar of the command line and the training config."""

import pytest
from tokred_core import (
    Task,
    TaskPolicies,
    TokredError,
    parse_policy,
    parse_task_policies,
    split_policy_spec,
)


def test_split_a_name_and_its_options():
    assert split_policy_spec("himix") == ("himix", {})
    assert split_policy_spec("hmgen:num_shallow=1") == ("hmgen", {"num_shallow": "1"})
    assert split_policy_spec(" hmgen : num_shallow = 2 : pattern=contiguous ") == (
        "hmgen",
        {"num_shallow": "2", "pattern": "contiguous"},
    )
    # Values stay text, ',' included: the policy's config reads lists from it.
    assert split_policy_spec("pyramid_drop:boundaries=1,2") == (
        "pyramid_drop",
        {"boundaries": "1,2"},
    )
    assert split_policy_spec("hmgen:num_shallow=1:num_shallow=2")[1] == {"num_shallow": "2"}
    assert split_policy_spec("fastv:query=") == ("fastv", {"query": ""})  # the policy judges ''


def test_typed_options_read_as_the_policy_reads_them():
    name, options = split_policy_spec(
        "hmgen:num_shallow=1:layers=2,4:pattern=alternate", typed=True
    )
    assert (name, options) == (
        "hmgen",
        {"num_shallow": 1, "layers": [2, 4], "pattern": "alternate"},
    )
    assert split_policy_spec("fastv:keep_ratio=0.25", typed=True)[1] == {"keep_ratio": 0.25}
    assert split_policy_spec("hmgen:layers=none", typed=True)[1] == {"layers": None}
    # What the policy cannot read stays text, for build_policy to report with its context.
    assert split_policy_spec("hmgen:num_shallow=one", typed=True)[1] == {"num_shallow": "one"}
    assert split_policy_spec("hmgen:depth=1", typed=True)[1] == {"depth": "1"}
    assert split_policy_spec("nosuch:x=1", typed=True) == ("nosuch", {"x": "1"})
    assert split_policy_spec("hmgen:pattern=zigzag", typed=True)[1] == {"pattern": "zigzag"}


@pytest.mark.parametrize(
    "text, bad", [("hmgen:oops", "'oops'"), ("hmgen:", "''"), ("hmgen:=1", "'=1'")]
)
def test_an_option_without_key_and_value_is_named(text, bad):
    with pytest.raises(TokredError, match=f"--policy option {bad} must be key=value"):
        split_policy_spec(text, what="--policy")
    with pytest.raises(TokredError, match=f"^policy option {bad}"):
        parse_policy(text)


def test_parse_policy_builds_and_checks():
    policy = parse_policy("hmgen:num_shallow=1:pattern=contiguous")
    assert policy.name == "hmgen"
    assert policy.config.num_shallow == 1 and policy.config.pattern == "contiguous"
    assert parse_policy("pyramid_drop:boundaries=1,2").config.boundaries == [1, 2]
    assert parse_policy(" none ").name == "none"
    with pytest.raises(TokredError, match="unknown policy 'nosuch'"):
        parse_policy("nosuch:x=1")
    with pytest.raises(TokredError, match="unknown policy 'HiMix'"):  # names are exact
        parse_policy("HiMix")
    with pytest.raises(TokredError, match="unknown policy ''"):
        parse_policy(":num_shallow=1")
    with pytest.raises(TokredError, match="unknown key 'depth' for policy 'hmgen'"):
        parse_policy("hmgen:depth=1")
    with pytest.raises(TokredError, match="num_shallow='one' must be an integer"):
        parse_policy("hmgen:num_shallow=one")


def test_one_policy_serves_every_task_it_can():
    both = parse_task_policies("hmgen:num_shallow=1")
    assert isinstance(both, TaskPolicies)
    assert {p.name for p in both.policies.values()} == {"hmgen"}
    assert both.policies[Task.GENERATION].config.num_shallow == 1
    himix = parse_task_policies("himix")
    assert himix.policies[Task.UNDERSTANDING].name == "himix"
    assert himix.policies[Task.GENERATION].name == "none"  # himix cannot serve generation
    assert {p.name for p in parse_task_policies("none").policies.values()} == {"none"}


def test_one_policy_per_task():
    tp = parse_task_policies(" understanding=himix, GENERATION = hmgen:num_shallow=1 ")
    assert tp.policies[Task.UNDERSTANDING].name == "himix"
    assert tp.policies[Task.GENERATION].config.num_shallow == 1
    only = parse_task_policies("generation=hmgen")
    assert only.policies[Task.UNDERSTANDING].name == "none"  # a task left out: unreduced
    assert (
        parse_task_policies("understanding=himix:start_layer=1")
        .policies[Task.UNDERSTANDING]
        .config.start_layer
        == 1
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("understanding=", "--policy 'understanding=': expected TASK=NAME"),
        ("understanding=himix,", "--policy '': expected TASK=NAME"),
        ("understanding=himix,hmgen", "--policy 'hmgen': expected TASK=NAME"),
        ("vision=himix", "unknown task 'vision'"),
        ("generation=himix", "policy 'himix' cannot serve generation"),
        ("understanding=nosuch", "unknown policy 'nosuch'"),
        ("understanding=hmgen:oops", "--policy option 'oops' must be key=value"),
        # ',' separates tasks, so a list option cannot hold one in this form
        ("understanding=pyramid_drop:boundaries=1,2", "--policy '2': expected TASK=NAME"),
        ("", "unknown policy ''"),
    ],
)
def test_task_policy_errors_name_the_bad_part(text, message):
    with pytest.raises(TokredError) as info:
        parse_task_policies(text, what="--policy")
    assert message in str(info.value) and "\n" not in str(info.value)
