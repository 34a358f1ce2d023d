"""`tokred analyze`: where does attention go, layer by layer? (PAPER.md section 1, Figure 3)

Runs the attention-allocation probe over held-out samples of both tasks and writes

    allocation.json                          shares per layer per key segment per task,
                                             shares split by query segment, summaries
    allocation_understanding_generation.png  stacked shares per layer, both tasks
    allocation_pies.png                      first/last layer pies, with the paper's

SOURCE is a run folder of `tokred train` (its model, vocabulary and VQ tokenizer are
loaded back; the model keeps the run's reduction unless --policy says otherwise), or a
local Hugging Face model folder (config.json + weights; with the embedded vocab.json and
vq/ beside them, or a family whose image tokenizer tokred knows). --tiny analyzes an
untrained embedded tiny model on the embedded shapes data instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tokred_core import TokredError

from . import Command

__all__ = [
    "COMMAND",
    "ALLOCATION_FILES",
    "analyze_run",
    "describe_policies",
    "load_source",
    "parse_policy_arg",
]

ALLOCATION_FILES = {
    "json": "allocation.json",
    "bars": "allocation_understanding_generation.png",
    "pies": "allocation_pies.png",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", nargs="?", metavar="RUN_DIR_OR_MODEL", help="a run folder or a local model folder"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="analyze an untrained embedded tiny model on the embedded shapes data",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: RUN_DIR/analysis, else ./tokred-analysis)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=32,
        metavar="N",
        help="validation samples per task (default 32)",
    )
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="default 16")
    parser.add_argument(
        "--policy",
        default="run",
        metavar="SPEC",
        help="run (the model's own reduction, default), none (full attention), a policy name, "
        "or TASK=NAME[,TASK=NAME]; options as NAME:key=value, e.g. generation=hmgen:num_shallow=1",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--tiny: a config override, e.g. model.num_layers=6 (repeatable)",
    )


def _one_policy(text: str):
    from tokred_core import build_policy

    name, *opts = text.split(":")
    options = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or not key.strip():
            raise TokredError(
                f"--policy option {opt!r} must be key=value, e.g. hmgen:num_shallow=1"
            )
        options[key.strip()] = value.strip()
    return build_policy(name.strip(), **options)


def parse_policy_arg(spec: str | None) -> Any:
    """'run' -> None (keep the model's); 'none'; 'himix' (every task it serves);
    'understanding=himix,generation=hmgen:num_shallow=1' -> a {task: policy} mapping."""
    from tokred_core import TaskPolicies, parse_task

    if spec is None or spec.strip() in ("", "run"):
        return None
    spec = spec.strip()
    if "=" not in spec.split(":")[0]:
        policy = _one_policy(spec)
        return TaskPolicies({task: policy for task in policy.tasks})
    mapping = {}
    for part in spec.split(","):
        task, sep, text = part.partition("=")
        if not sep or not text.strip():
            raise TokredError(f"--policy {part!r}: expected TASK=NAME, e.g. understanding=himix")
        mapping[parse_task(task.strip())] = _one_policy(text)
    return TaskPolicies(mapping)


def _tiny_run(overrides: list[str], samples: int):
    from tokred_train import build_train_data, load_config
    from tokred_train.eval.run import LoadedRun
    from tokred_train.model.builder import build_model

    from .demo import DEMO_BASE_CONFIG

    config = load_config(
        DEMO_BASE_CONFIG,
        [f"data.num_val={max(samples, 1)}", "run.out_dir=tokred-analysis", *overrides],
    )
    data = build_train_data(config)
    built = build_model(config, data.vocab.vocab_size, "cpu")
    built.model.eval()
    return LoadedRun(
        None, config, built.model, built.handle, data.vocab, data.image_tokenizer, data
    )


def _model_folder_run(path: Path, samples: int):
    from tokred_train import load_config
    from tokred_train.eval.run import LoadedRun

    vocab_file, vq_dir = path / "vocab.json", path / "vq"
    if vocab_file.is_file() and vq_dir.is_dir():
        # An embedded-style model saved with save_pretrained, its vocabulary and VQ beside it.
        from tokred_train.data import PatchVQTokenizer, UnifiedVocab
        from tokred_train.data.pipeline import build_embedded_data
        from transformers import AutoModelForCausalLM

        vocab, vq = UnifiedVocab.load(vocab_file), PatchVQTokenizer.load(vq_dir)
        config = load_config(
            {
                "model": {"kind": "hf", "path": str(path)},
                "data": {
                    "num_train": 1,
                    "num_val": max(samples, 1),
                    "image_size": vq.image_size[0],
                    "patch_size": vq.patch_size,
                    "codebook_size": vq.codebook_size,
                },
            }
        )
        data = build_embedded_data(config.data, (vocab, vq))
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise TokredError(
                f"{path}: could not load the model: {' '.join(str(exc).split())}"
            ) from None
        return LoadedRun(None, config, model.eval(), None, vocab, vq, data)
    from tokred_train import build_train_data
    from tokred_train.model.builder import build_model

    config = load_config(
        {"model": {"kind": "hf", "path": str(path)}, "data": {"num_val": max(samples, 1)}}
    )
    built = build_model(config, None, "cpu")  # the family's tokenizer and VQ live in it
    data = build_train_data(config, built.base)
    built.model.eval()
    return LoadedRun(
        None, config, built.model, built.handle, data.vocab, data.image_tokenizer, data
    )


def load_source(source: str | None, tiny: bool, overrides: list[str], samples: int):
    """A LoadedRun from a run folder, a model folder, or --tiny."""
    if tiny:
        if source:
            raise TokredError("give either RUN_DIR_OR_MODEL or --tiny, not both")
        return _tiny_run(overrides, samples)
    if overrides:
        raise TokredError("--set applies to --tiny only (a run folder has its own config)")
    if not source:
        raise TokredError(
            "give a run folder or a model folder, or --tiny for the embedded tiny model"
        )
    path = Path(source)
    if not path.is_dir():
        raise TokredError(
            f"{path} is not a folder: give a run folder (config.yaml) or a model folder (config.json)"
        )
    if (path / "config.yaml").is_file():
        from tokred_train.eval.run import load_run

        return load_run(path)
    if (path / "config.json").is_file():
        return _model_folder_run(path, samples)
    raise TokredError(
        f"{path} holds neither config.yaml (a tokred run) nor config.json (a Hugging Face model)"
    )


def describe_policies(policies: Any) -> str:
    """'understanding: himix, generation: hmgen(num_shallow=1)' for a TaskPolicies."""
    import dataclasses

    inner = getattr(policies, "policies", None)
    if not isinstance(inner, dict):
        return str(policies)
    parts = []
    for task, policy in inner.items():
        config = getattr(policy, "config", None)
        fields = []
        if dataclasses.is_dataclass(config):
            for f in dataclasses.fields(config):
                value = getattr(config, f.name)
                if f.default is not dataclasses.MISSING and value != f.default:
                    fields.append(f"{f.name}={value}")
        name = getattr(task, "name", str(task)).lower()
        parts.append(f"{name}: {policy.name}" + (f"({', '.join(fields)})" if fields else ""))
    return ", ".join(parts)


def _describe(run, policies: Any) -> str:
    if policies is not None:
        return describe_policies(policies)
    handle = run.handle
    if handle is None:
        return "none (unpatched model)"
    return f"{describe_policies(handle.policies)}; sharing {handle.sharing.value}"


def analyze_run(
    run,
    out_dir: str | Path,
    samples: int = 32,
    batch_size: int = 16,
    policies: Any = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Probe `run` (a LoadedRun), write the JSON and both figures; returns the JSON dict
    with the written paths under 'files'."""
    from tokred_train.eval.allocation import allocation_to_dict, attention_allocation

    from ..figures import plot_allocation, plot_pies

    if samples < 1:
        raise TokredError(f"--samples {samples}: need at least 1 sample per task")
    if batch_size < 1:
        raise TokredError(f"--batch-size {batch_size}: need at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = "val" if any(len(s) for s in run.data.val.values()) else "train"
    result = attention_allocation(run.model, run.data, samples, batch_size, split, policies)
    alloc = allocation_to_dict(
        result,
        policy=_describe(run, policies),
        source=str(run.run_dir) if run.run_dir else None,
        split=split,
        num_layers=int(next(iter(result.mass.values())).shape[0]),
    )
    files = {
        "json": out_dir / ALLOCATION_FILES["json"],
        "bars": out_dir / ALLOCATION_FILES["bars"],
        "pies": out_dir / ALLOCATION_FILES["pies"],
    }
    from tokred_train.atomic import atomic_write_text

    atomic_write_text(files["json"], json.dumps(alloc, indent=1) + "\n")
    plot_allocation(alloc, files["bars"], title=title)
    plot_pies(alloc, files["pies"], title=title)
    alloc["files"] = {k: str(v) for k, v in files.items()}
    return alloc


def summary_lines(alloc: dict[str, Any]) -> list[str]:
    lines = []
    for task in ("understanding", "generation"):
        entry = alloc.get(task)
        if not entry:
            continue
        seg = entry["image_segment"]
        middle = entry.get("image_share_middle_mean")
        lines.append(
            f"{task} ({entry['num_samples']} samples): {seg} share layer 0 "
            f"{100 * entry['image_share_first']:.1f}%, middle mean "
            + (f"{100 * middle:.1f}%" if middle is not None else "n/a")
            + f", last {100 * entry['image_share_last']:.1f}%"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise TokredError(f"--samples {args.samples}: need at least 1 sample per task")
    if args.batch_size < 1:
        raise TokredError(f"--batch-size {args.batch_size}: need at least 1")
    policies = parse_policy_arg(args.policy)
    loaded = load_source(args.source, args.tiny, args.overrides, args.samples)
    if args.out:
        out = Path(args.out)
    elif loaded.run_dir is not None:
        out = loaded.run_dir / "analysis"
    else:
        out = Path("tokred-analysis")
    alloc = analyze_run(loaded, out, args.samples, args.batch_size, policies)
    for line in summary_lines(alloc):
        print(line)
    for path in alloc["files"].values():
        print(f"wrote {path}")
    return 0


COMMAND = Command(
    name="analyze",
    help="attention allocation per layer and key segment (the paper's Figure 3)",
    description=__doc__,
    configure=configure,
    run=run,
)
