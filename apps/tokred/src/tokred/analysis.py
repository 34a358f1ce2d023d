"""Where does attention go, layer by layer? (PAPER.md section 1, Figure 3) The work of
`tokred analyze`, and the probe the demo runs on both of its runs.

A source is a run folder of `tokred train` (its model, vocabulary and VQ tokenizer are
loaded back; the model keeps the run's reduction unless a policy says otherwise), a local
Hugging Face model folder (config.json + weights; with the embedded vocab.json and vq/
beside them, or a family whose image tokenizer tokred knows), or the untrained embedded
tiny model of the demo recipe on the embedded shapes data. `analyze_run` probes it over
held-out samples of both tasks and writes

    allocation.json                          shares per layer per key segment per task,
                                             shares split by query segment, summaries
    allocation_understanding_generation.png  stacked shares per layer, both tasks
    allocation_pies.png                      first/last layer pies, with the paper's
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from tokred_core import TokredError
from tokred_train import load_config
from tokred_train.atomic import atomic_write_text
from tokred_train.built_run import VOCAB_FILE, VQ_DIR, build_run, saved_embedded_io
from tokred_train.data.pipeline import build_embedded_data
from tokred_train.eval.allocation import allocation_to_dict, attention_allocation
from tokred_train.eval.run import LoadedRun, load_run

from .figures import plot_allocation, plot_pies
from .policy_arg import parse_policy_arg
from .recipes import DEMO_RECIPE, shipped_configs

__all__ = [
    "ALLOCATION_FILES",
    "analyze",
    "analyze_run",
    "describe_policies",
    "load_source",
    "summary_lines",
]

ALLOCATION_FILES = {
    "json": "allocation.json",
    "bars": "allocation_understanding_generation.png",
    "pies": "allocation_pies.png",
}


def _tiny_run(overrides: list[str], samples: int) -> LoadedRun:
    config = load_config(
        shipped_configs()[DEMO_RECIPE],
        [f"data.num_val={max(samples, 1)}", "run.out_dir=tokred-analysis", *overrides],
    )
    run = build_run(config, "cpu")
    run.model.eval()
    return LoadedRun.of(run)


def _embedded_model_folder_run(path: Path, samples: int) -> LoadedRun:
    """A model saved with save_pretrained, the embedded vocabulary and VQ beside it: loaded
    as it is (unpatched), with the data its vocabulary and VQ tokenizer make."""
    from transformers import AutoModelForCausalLM

    io = saved_embedded_io(path)
    vq = io.image_tokenizer
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
    data = build_embedded_data(config.data, io)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise TokredError(
            f"{path}: could not load the model: {' '.join(str(exc).split())}"
        ) from None
    return LoadedRun(None, config, model.eval(), None, io.vocab, vq, data)


def _model_folder_run(path: Path, samples: int) -> LoadedRun:
    if (path / VOCAB_FILE).is_file() and (path / VQ_DIR).is_dir():
        return _embedded_model_folder_run(path, samples)
    config = load_config(
        {"model": {"kind": "hf", "path": str(path)}, "data": {"num_val": max(samples, 1)}}
    )
    run = build_run(config, "cpu")  # the family's tokenizer and VQ live in the model
    run.model.eval()
    return LoadedRun.of(run)


def load_source(source: str | None, tiny: bool, overrides: list[str], samples: int) -> LoadedRun:
    """A LoadedRun from a run folder, a model folder, or (tiny) the demo recipe's model."""
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
        return load_run(path)
    if (path / "config.json").is_file():
        return _model_folder_run(path, samples)
    raise TokredError(
        f"{path} holds neither config.yaml (a tokred run) nor config.json (a Hugging Face model)"
    )


def describe_policies(policies: Any) -> str:
    """'understanding: himix, generation: hmgen(num_shallow=1)' for a TaskPolicies."""
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


def _describe(run: LoadedRun, policies: Any) -> str:
    if policies is not None:
        return describe_policies(policies)
    handle = run.handle
    if handle is None:
        return "none (unpatched model)"
    return f"{describe_policies(handle.policies)}; sharing {handle.sharing.value}"


def _check_counts(samples: int, batch_size: int) -> None:
    if samples < 1:
        raise TokredError(f"--samples {samples}: need at least 1 sample per task")
    if batch_size < 1:
        raise TokredError(f"--batch-size {batch_size}: need at least 1")


def analyze_run(
    run: LoadedRun,
    out_dir: str | Path,
    samples: int = 32,
    batch_size: int = 16,
    policies: Any = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Probe `run`, write the JSON and both figures; returns the JSON dict with the
    written paths under 'files'."""
    _check_counts(samples, batch_size)
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
    files = {key: out_dir / name for key, name in ALLOCATION_FILES.items()}
    atomic_write_text(files["json"], json.dumps(alloc, indent=1) + "\n")
    plot_allocation(alloc, files["bars"], title=title)
    plot_pies(alloc, files["pies"], title=title)
    alloc["files"] = {k: str(v) for k, v in files.items()}
    return alloc


def analyze(
    source: str | None,
    tiny: bool = False,
    out: str | Path | None = None,
    samples: int = 32,
    batch_size: int = 16,
    policy: str | None = "run",
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """`tokred analyze`: load the source, probe it into `out` (default: RUN_DIR/analysis
    for a run folder, else ./tokred-analysis); returns `analyze_run`'s dict."""
    _check_counts(samples, batch_size)  # before the (slow) load
    policies = parse_policy_arg(policy)
    loaded = load_source(source, tiny, list(overrides or []), samples)
    if out:
        out_dir = Path(out)
    elif loaded.run_dir is not None:
        out_dir = loaded.run_dir / "analysis"
    else:
        out_dir = Path("tokred-analysis")
    return analyze_run(loaded, out_dir, samples, batch_size, policies)


def summary_lines(alloc: dict[str, Any]) -> list[str]:
    """What `tokred analyze` prints: the image share per task, then the written files."""
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
    return lines + [f"wrote {path}" for path in alloc.get("files", {}).values()]
