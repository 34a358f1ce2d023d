"""The config tree: defaults, YAML, overrides, coercion and one-line errors naming the key."""

from __future__ import annotations

import pytest
import yaml
from tokred_core import TokredError
from tokred_train.config import TrainConfig, config_to_dict, load_config, save_config


def test_defaults_are_valid():
    config = load_config()
    assert config == TrainConfig()
    assert config.model.kind == "tiny" and config.data.kind == "shapes"
    assert config.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_yaml_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "optim": {"lr": "1e-3", "betas": [0.9, 0.99]},
                "reduction": {"understanding": "himix", "sharing": "task"},
                "run": {"bf16": "auto"},
            }
        )
    )
    config = load_config(
        path,
        [
            "optim.max_steps=7",
            "reduction.generation=hmgen",
            "reduction.generation.options.num_shallow=1",
            "lora.target_modules=[q_proj, v_proj]",
            "run.bf16=true",
            "data.questions_per_image=null",
        ],
    )
    assert config.optim.lr == 1e-3 and config.optim.betas == [0.9, 0.99]
    assert config.optim.max_steps == 7
    assert config.reduction.understanding.policy == "himix"
    assert config.reduction.generation.policy == "hmgen"
    assert config.reduction.generation.options == {"num_shallow": 1}
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.run.bf16 is True and config.data.questions_per_image is None
    saved = save_config(config, tmp_path / "out" / "config.yaml")
    assert load_config(saved) == config
    assert load_config(config_to_dict(config)) == config
    assert load_config(config, ["optim.lr=0.5"]).optim.lr == 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1e-3"], "optim.lrr: unknown key (known: lr, weight_decay,"),
        (["colour=red"], "colour: unknown key (known: model, data,"),
        (["optim.lr=fast"], "optim.lr: expected a number, got 'fast'"),
        (["optim.batch_size=2.5"], "optim.batch_size: expected an integer, got 2.5"),
        (["run.progress=maybe"], "run.progress: expected true or false, got 'maybe'"),
        (["optim=3"], "optim: expected a section"),
        (["data.understanding_ratio=1.5"], "data.understanding_ratio: 1.5 is outside [0, 1]"),
        (["data.understanding_ratio=-0.1"], "data.understanding_ratio: -0.1 is outside [0, 1]"),
        (["data.kind=parquet"], "data.kind: 'parquet' must be one of"),
        (["data.kind=llava"], "data.paths: kind 'llava' needs at least one"),
        (["data.patch_size=5"], "data.patch_size: 5 does not divide data.image_size=32"),
        (["model.kind=hf"], "model.path: kind 'hf' needs"),
        (["model.hidden_size=30"], "model.hidden_size: 30 is not divisible by model.num_heads=4"),
        (["optim.lr=0"], "optim.lr: 0.0 must be > 0"),
        (["optim.betas=[0.9]"], "optim.betas"),
        (["lora.quantize_4bit=true"], "lora.quantize_4bit: a 4-bit base is frozen"),
        (["lora.modules_to_save=[lm_head]"], "lora.modules_to_save: names modules to train"),
        (["lora.dropout=1"], "lora.dropout"),
        (["run.prefetch=-1"], "run.prefetch: -1 must be >= 0"),
        (["run.device=tpu"], "run.device: 'tpu' must be"),
        (["reduction.understanding=nope"], "reduction.understanding: unknown policy 'nope'"),
        (["reduction.generation=himix"], "cannot serve generation"),
        (
            [
                "reduction.understanding.options.start_layr=1",
                "reduction.understanding.policy=himix",
            ],
            "reduction.understanding: unknown key 'start_layr'",
        ),
        (["reduction.generation=hmgen"], "reduction.generation: hmgen num_shallow=3"),
        (["reduction.sharing=all"], "reduction.sharing: 'all' must be one of"),
        (["optim.lr"], "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_their_key(overrides, message):
    with pytest.raises(TokredError) as info:
        load_config(None, overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_file_errors(tmp_path):
    with pytest.raises(TokredError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1\n")
    with pytest.raises(TokredError, match="is not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(TokredError, match="expected a mapping of sections"):
        load_config(bad)
    bad.write_text("")
    assert load_config(bad) == TrainConfig()


def test_a_policy_with_options_reads_as_on_the_command_line(tmp_path):
    # `hmgen:num_shallow=1` (tokred_core.parse_policy's grammar) is the name plus options,
    # as an override, in YAML, and as the `policy` key; it saves as the long form.
    long = load_config(
        {"reduction": {"generation": {"policy": "hmgen", "options": {"num_shallow": 1}}}}
    )
    short = load_config(None, ["reduction.generation=hmgen:num_shallow=1"])
    assert short == long
    assert config_to_dict(short)["reduction"]["generation"] == {
        "policy": "hmgen",
        "options": {"num_shallow": 1},
    }
    path = tmp_path / "c.yaml"
    path.write_text("reduction:\n  generation: hmgen:num_shallow=1:pattern=contiguous\n")
    from_yaml = load_config(path)
    assert from_yaml.reduction.generation.options == {"num_shallow": 1, "pattern": "contiguous"}
    assert load_config(save_config(from_yaml, tmp_path / "saved.yaml")) == from_yaml
    # Options in the text win over the options mapping; the others are kept.
    both = load_config(
        {
            "reduction": {
                "generation": {
                    "policy": "hmgen:num_shallow=1",
                    "options": {"num_shallow": 2, "pattern": "contiguous"},
                }
            }
        }
    )
    assert both.reduction.generation.options == {"num_shallow": 1, "pattern": "contiguous"}
    # A bare name keeps behaving and saving exactly as before.
    plain = load_config(None, ["reduction.understanding=himix"])
    assert config_to_dict(plain)["reduction"]["understanding"] == {"policy": "himix", "options": {}}
    # Mistakes name the bad part, under the task's key where the policy is the judge.
    for override, message in [
        ("reduction.generation=hmgen:oops", "reduction policy option 'oops' must be key=value"),
        (
            "reduction.generation=hmgen:num_shallow=one",
            "reduction.generation: hmgen.num_shallow='one'",
        ),
        ("reduction.generation=hmgen:depth=1", "reduction.generation: unknown key 'depth'"),
        ("reduction.understanding=nope:x=1", "reduction.understanding: unknown policy 'nope'"),
        ("reduction.generation=hmgen:num_shallow=3", "reduction.generation: hmgen num_shallow=3"),
    ]:
        with pytest.raises(TokredError) as info:
            load_config(None, [override])
        assert message in str(info.value), override
