"""The work of `tokred eval`: a trained run's task metrics (tokred_train.eval.run) and
the short summary the command prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokred_core import TokredError
from tokred_train.eval.fid import load_feature_extractor
from tokred_train.eval.run import evaluate_run, load_run

from .policy_arg import parse_policy_arg

__all__ = ["evaluate", "format_eval"]


def evaluate(
    run_dir: str | Path,
    out: str | Path | None = None,
    understanding: int | None = 200,
    generation: int | None = 48,
    policy: str | None = "run",
    mode: str = "auto",
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    cfg_weight: float | None = None,
    fid_weights: str | Path | None = None,
) -> dict[str, Any]:
    """`tokred eval`: check the arguments, load the run, score it into `out` (default
    RUN_DIR/eval); returns eval.json's content. fid_weights: a local TorchScript FID
    network (inception-2015-12-05.pt): the generated images are then scored by FID too."""
    for name, value in (("understanding", understanding), ("generation", generation)):
        if value is not None and value < 0:
            raise TokredError(f"--{name} {value}: need 0 or more")
    if temperature < 0:
        raise TokredError(f"--temperature {temperature}: need 0 (greedy) or more")
    policies = parse_policy_arg(policy)
    if policies is not None and mode == "cached":
        raise TokredError(
            "--mode cached runs the unreduced model: drop --policy or use --mode reduced"
        )
    # Read the FID network before the run: a bad file is one line, before any model loads.
    fid = load_feature_extractor(fid_weights) if fid_weights is not None else None
    return evaluate_run(
        load_run(Path(run_dir)),
        Path(out) if out else None,
        num_understanding=understanding,
        num_generation=generation,
        mode=mode,
        policies=policies,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        cfg_weight=cfg_weight,
        fid=fid,
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_eval(result: dict) -> str:
    """A short human summary of eval.json."""
    lines = []
    u = result.get("understanding")
    if u:
        lines.append(
            f"understanding: exact match {_pct(u['accuracy'])} on {u['total']} questions "
            f"(chance {_pct(u['chance'])}, majority answer {_pct(u['majority'])}; decode {u['mode']})"
        )
        for name, t in u["per_type"].items():
            lines.append(
                f"  {name:<9} {_pct(t['accuracy']):>6}  (n={t['total']}, chance {_pct(t['chance'])} "
                f"= 1/{t['num_answers']}, majority {_pct(t['majority'])})"
            )
    g = result.get("generation")
    if g and g.get("per_attribute"):
        lines.append(
            f"generation: all attributes right {_pct(g['accuracy'])} on {g['total']} prompts "
            f"(chance {_pct(g['chance']['all'])}; {g['empty_images']} empty images; decode {g['mode']})"
        )
        for attr in ("kind", "color", "position"):
            lines.append(
                f"  {attr:<9} {_pct(g['per_attribute'][attr]):>6}  (chance {_pct(g['chance'][attr])})"
            )
    elif g and "fid" not in g:
        lines.append(
            f"generation: {g['total']} images drawn, not scored (no detector for this data)"
        )
    if g and "fid" in g:
        lines.append(
            f"generation: FID {g['fid']:.2f} on {g['fid_images']} images against the "
            f"{g['fid_reference']} (lower is better; {g['fid_weights']})"
        )
    if result.get("sample_grid"):
        lines.append(f"samples: {result['sample_grid']}")
    return "\n".join(lines)
