"""Evaluate a training run: load it back from its folder (or take it from `train()`),
score both tasks on its validation data, and write the results.

A run folder, as `tokred_train.run.loop.train` writes it:

    config.yaml  vocab.json  vq/  checkpoints/step-NNNNNN/model.safetensors  summary.json

`load_run` rebuilds the model from config.yaml (the same `build_model`, so the reduction
patch and its image projection sets are back), loads the newest complete checkpoint's
weights, and reads the vocabulary and VQ tokenizer saved beside it. The model stays
patched with the run's own policies: evaluation runs under the reduction it was trained
with (`evaluate_decode` explains the decode modes).

`eval_records` takes the validation split: for the shapes set it is rebuilt from the data
config (the validation images come from their own seeded stream, so the split is the one
the run held out) and every generation prompt carries the shapes the detector checks;
for real formats the understanding records are the held-out samples and generation
images are scored only by FID, when a feature extractor is given (eval/fid.py).

Model families (tokred_train.families): Janus decodes through `JanusForDecoding`
(SigLIP pixels for questions, generation_head for codes). Images are written slot by slot
as the family's template says (`generation.image_block`: Emu3's size prefix and row ends
are forced, codes picked among the code ids). Chameleon has no VQ decoder in
transformers, so `evaluate_run` scores its understanding and says why generation was
left out.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokred_core import Task, TokredError
from tokred_models import ReductionHandle
from torch import nn

from ..atomic import atomic_write_text
from ..built_run import BuiltRun, build_run
from ..config import TrainConfig, config_to_dict, load_config
from ..data.protocols import ImageTokenizer, TokenVocab
from ..data.training_data import TrainData
from ..run.checkpoint import CHECKPOINT_DIR, CheckpointInfo, load_checkpoint, scan_checkpoints
from ..run.loop import RunResult
from ..run.provenance import RUN_FILE, check_same_run, read_provenance
from ..run.setup import CONFIG_FILE
from ..run.sharded_checkpoint import is_sharded_checkpoint, load_sharded_state
from .answers import UnderstandingResult
from .fid import FeatureExtractor, FidReference
from .generation import (
    GenerationResult,
    evaluate_generation,
    generate_image_codes,
    image_block,
)
from .grid import save_sample_grid
from .janus import JanusForDecoding
from .records import shapes_eval_records
from .understanding import evaluate_understanding

log = logging.getLogger(__name__)

__all__ = [
    "LoadedRun",
    "load_run",
    "run_from_result",
    "eval_records",
    "evaluate_run",
    "generation_unsupported",
    "EVAL_DIR",
]

EVAL_DIR = "eval"


@dataclass
class LoadedRun:
    """A trained model with everything needed to feed it."""

    run_dir: Path | None
    config: TrainConfig
    model: nn.Module
    handle: ReductionHandle | None
    """Its reduction handle (the model stays patched with the run's policies); None for a
    model loaded as it is, unpatched."""
    vocab: TokenVocab
    vq: ImageTokenizer
    data: TrainData
    """The run's data, with the validation samples."""
    checkpoint: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        run: BuiltRun,
        run_dir: Path | None = None,
        checkpoint: Path | None = None,
        summary: dict[str, Any] | None = None,
    ) -> LoadedRun:
        """The evaluation view of a built run."""
        return cls(
            run_dir,
            run.config,
            run.model,
            run.handle,
            run.vocab,
            run.image_tokenizer,
            run.data,
            checkpoint,
            dict(summary or {}),
        )


def _read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _warn_nonfinite(model: nn.Module, checkpoint: Path) -> None:
    """A checkpoint with NaN or inf weights scores 0% without any other sign: say so."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        log.warning(
            "%s: %d parameter tensors hold NaN or inf (first: %s); its scores mean nothing",
            checkpoint,
            len(bad),
            bad[0],
        )


def _newest_whole_checkpoint(run_dir: Path) -> CheckpointInfo:
    """The newest checkpoint whose files match its marker, read as it is: evaluating a
    run never changes its folder (a resume sets damaged ones aside). A damaged newer one
    is skipped with a warning; when none is whole, the error says what is wrong."""
    newest, damaged = scan_checkpoints(run_dir)
    what = "; ".join(f"{path}: {reason}" for path, reason in damaged)
    if newest is not None:
        if damaged:
            log.warning("skipped damaged checkpoints (%s)", what)
        return newest
    if damaged:
        raise TokredError(
            f"{run_dir} holds no whole checkpoint ({what}); retrain it, or restore the "
            "checkpoint files"
        )
    raise TokredError(
        f"{run_dir} holds no complete checkpoint: train it to the end (run.save_final=true) "
        "or set run.ckpt_every"
    )


def _run_config(run_dir: Path, checkpoint: Path, device: str | torch.device) -> TrainConfig:
    """The config to rebuild the trained model from: config.yaml, checked against the one
    the checkpoint recorded (run.json), or the recorded one alone when config.yaml is
    gone. A config.yaml that would build another model or plan is one line."""
    device_override = ["run.device=" + str(device)]
    recorded = read_provenance(checkpoint)
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        if recorded is None:
            raise TokredError(
                f"{run_dir} has no {CONFIG_FILE}, and its checkpoint {checkpoint.name} records "
                "no config (written before run.json): restore config.yaml"
            )
        log.warning("%s has no %s: using the config its checkpoint recorded", run_dir, CONFIG_FILE)
        return load_config(recorded["config"], device_override)
    config = load_config(cfg_path, device_override)
    if recorded is not None:
        fix = f"restore {cfg_path} as the run wrote it (or remove it to use the recorded one)"
        check_same_run(recorded["config"], config_to_dict(config), checkpoint / RUN_FILE, fix)
    return config


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a run's model from its folder and load its newest complete checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() and not (run_dir / CHECKPOINT_DIR).is_dir():
        raise TokredError(
            f"{run_dir} is not a run folder (no config.yaml): give the out_dir of a `tokred train` run"
        )
    ckpt = _newest_whole_checkpoint(run_dir)
    config = _run_config(run_dir, ckpt.path, device)
    run = build_run(config, device, saved=run_dir)
    built = run.built
    if is_sharded_checkpoint(ckpt.path):  # a run.distributed=fsdp run's, in one process
        load_sharded_state(ckpt.path, built.model)
    else:
        load_checkpoint(ckpt.path, built.model, map_location=device, restore_rng=False)
    built.model.eval()
    _warn_nonfinite(built.model, ckpt.path)
    return LoadedRun.of(run, run_dir, ckpt.path, _read_summary(run_dir))


def run_from_result(result: RunResult) -> LoadedRun:
    """The same view of a `train()` RunResult, without reloading anything."""
    return LoadedRun.of(result.run, result.run_dir, result.checkpoint, result.summary)


def eval_records(
    run: LoadedRun, num_understanding: int | None = None, num_generation: int | None = None
) -> tuple[
    list[dict[str, Any]], torch.Tensor, list[dict[str, Any]], list[Any] | None, torch.Tensor | None
]:
    """(understanding records, their codes, generation records, reference images or None,
    the understanding images as the model's pixel_values, or None when it reads codes)."""
    cfg = run.config.data
    spec = run.data.understanding_pixels
    if cfg.kind == "shapes":
        from ..data import build_shapes_dataset

        if cfg.num_val < 1:
            raise TokredError(
                "the run has no validation images (data.num_val=0); nothing to evaluate"
            )
        # The validation split has its own random stream: num_train does not change it.
        val = build_shapes_dataset(
            num_train=0,
            num_val=cfg.num_val,
            seed=cfg.seed,
            image_size=cfg.image_size,
            max_shapes=cfg.max_shapes,
            task_split=cfg.task_split,
        )["validation"]
        und, codes, gen = shapes_eval_records(val, run.vq, num_understanding, num_generation)
        refs = [val[int(r["image_index"])]["image"] for r in gen]
        pixels = None
        if spec is not None and und:
            images = [spec.fit_image(val[int(r["image_index"])]["image"]) for r in und]
            pixels = spec.normalize(np.stack(images))
        return und, codes, gen, refs, pixels
    und_s, gen_s = run.data.val["understanding"], run.data.val["generation"]
    n_u = len(und_s) if num_understanding is None else min(num_understanding, len(und_s))
    n_g = len(gen_s) if num_generation is None else min(num_generation, len(gen_s))
    und = [dict(r) for r in und_s.records[:n_u]]
    gen = [dict(r) for r in gen_s.records[:n_g]]
    pixels = None
    if spec is not None and n_u:
        pixels = spec.normalize(und_s.take_pixels(range(n_u)).numpy())
    return und, und_s.codes[:n_u].long(), gen, None, pixels


def _decoders(run: LoadedRun, cfg_weight: float | None = None) -> tuple[nn.Module, nn.Module]:
    """(the model that answers questions, the model that writes image codes)."""
    if run.data.loss_path == "janus":
        janus, vocab = run.handle.model, run.vocab
        writer = JanusForDecoding(
            janus, Task.GENERATION, vocab.boi_id, cfg_weight=cfg_weight, pad_id=vocab.pad_id
        )
        return JanusForDecoding(janus, Task.UNDERSTANDING, vocab.boi_id), writer
    if cfg_weight is not None:
        raise TokredError(
            f"cfg_weight={cfg_weight}: classifier-free guidance is implemented for Janus runs "
            f"only (this run's loss path: {run.data.loss_path})"
        )
    return run.model, run.model


def generation_unsupported(run: LoadedRun) -> str | None:
    """Why evaluation cannot write this run's images, or None when it can."""
    try:
        image_block(run.vocab, run.vq)
    except TokredError as exc:
        return str(exc)
    if not getattr(run.vq, "can_decode", True):
        return f"{type(run.vq).__name__} cannot decode codes to pixels"
    return None


def evaluate_run(
    run: LoadedRun,
    out_dir: str | Path | None = None,
    *,
    num_understanding: int | None = 200,
    num_generation: int | None = 48,
    mode: str = "auto",
    policies: Any = None,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    grid_size: int = 16,
    cfg_weight: float | None = None,
    fid: FeatureExtractor | None = None,
) -> dict[str, Any]:
    """Score both tasks; write eval.json and samples.png into out_dir (default
    RUN_DIR/eval). Returns the JSON-ready results. cfg_weight: classifier-free guidance of
    Janus generation (see evaluate_janus.py). fid (`eval.fid.load_feature_extractor`):
    also score the generated images by FID against the prompts' reference images."""
    answerer, writer = _decoders(run, cfg_weight)  # bad arguments fail before any write
    if out_dir is None:
        if run.run_dir is None:
            raise TokredError("give out_dir: this run has no folder")
        out_dir = run.run_dir / EVAL_DIR
    und, codes, gen, refs, und_pixels = eval_records(run, num_understanding, num_generation)
    settings = _Decoding(mode, policies, temperature, seed, batch_size)
    reference = _fid_reference(run, gen, refs, fid, settings)  # a bad extractor fails here
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"run_dir": str(run.run_dir) if run.run_dir else None}
    started = time.perf_counter()
    u: UnderstandingResult | None = None
    if und:
        u = evaluate_understanding(
            answerer,
            run.vocab,
            codes,
            und,
            pixel_values=und_pixels,
            mode=mode,
            policies=policies,
            batch_size=batch_size,
            system_prompt=run.data.system_prompt,
        )
        out["understanding"] = u.to_dict()
    out["understanding_time_s"] = time.perf_counter() - started
    started = time.perf_counter()
    if gen:
        grid = out_dir / "samples.png"
        part, images = _generation(run, writer, gen, refs, settings, grid, grid_size)
        out.update(part)
        if reference is not None and images is not None:
            out["generation"].update(reference.score(images))
    out["generation_time_s"] = time.perf_counter() - started
    out["settings"] = {
        "num_understanding": len(und),
        "num_generation": len(gen),
        "mode": mode,
        "temperature": temperature,
        "cfg_weight": cfg_weight,
        "seed": seed,
    }
    if u is not None:
        predictions = out_dir / "predictions.jsonl"
        atomic_write_text(predictions, "".join(json.dumps(p) + "\n" for p in u.predictions))
    atomic_write_text(out_dir / "eval.json", json.dumps(out, indent=2) + "\n")
    return out


@dataclass(frozen=True)
class _Decoding:
    """How both tasks decode in one evaluation."""

    mode: str
    policies: Any
    temperature: float
    seed: int
    batch_size: int


def _generation(
    run: LoadedRun,
    writer: nn.Module,
    gen: list[dict[str, Any]],
    refs: list[Any] | None,
    settings: _Decoding,
    grid_path: Path,
    grid_size: int,
) -> tuple[dict[str, Any], Any]:
    """(the generation part of eval.json: scored by the detector on the shapes set, only
    generated elsewhere (or skipped, saying why), plus the sample grid; the generated
    uint8 (B, H, W, 3) images, or None)."""
    why_not = generation_unsupported(run)
    if why_not is not None:
        return {"generation": {"total": 0, "skipped": why_not}}, None
    out: dict[str, Any] = {}
    if run.config.data.kind == "shapes":
        g: GenerationResult = evaluate_generation(
            writer,
            run.vocab,
            run.vq,
            gen,
            mode=settings.mode,
            policies=settings.policies,
            temperature=settings.temperature,
            seed=settings.seed,
            batch_size=settings.batch_size,
            system_prompt=run.data.system_prompt,
        )
        out["generation"] = g.to_dict()
        images, prompts, marks = g.images, g.prompts, [c["all"] for c in g.checks]
    else:
        images, prompts = _generate_unscored(run, writer, gen, settings)
        marks = None
        out["generation"] = {"total": len(gen), "scored": False}
    k = min(grid_size, len(prompts))
    if k and images is not None:
        grid = save_sample_grid(
            images[:k],
            prompts[:k],
            grid_path,
            marks=marks[:k] if marks else None,
            references=refs[:k] if refs is not None else None,
            title=f"generated (frame: detector check {'passed' if marks else 'n/a'})",
        )
        out["sample_grid"] = str(grid)
    return out, images


def _generate_unscored(
    run: LoadedRun, writer: nn.Module, gen: list[dict[str, Any]], settings: _Decoding
) -> tuple[Any, list[str]]:
    """Images for prompts without a detector (real data): generate and decode only."""
    codes, _ = generate_image_codes(
        writer,
        run.vocab,
        run.vq,
        [r["prompt"] for r in gen],
        mode=settings.mode,
        policies=settings.policies,
        temperature=settings.temperature,
        seed=settings.seed,
        batch_size=settings.batch_size,
        system_prompt=run.data.system_prompt,
    )
    images = run.vq.decode(codes) if hasattr(run.vq, "decode") else None
    if isinstance(images, torch.Tensor):
        images = images.numpy()
    return images, [r["prompt"] for r in gen]


def _fid_reference(
    run: LoadedRun,
    gen: list[dict[str, Any]],
    refs: list[Any] | None,
    fid: FeatureExtractor | None,
    settings: _Decoding,
) -> FidReference | None:
    """What FID compares the generated images with, measured before any decoding so a
    bad extractor (or too few prompts) fails first; None without FID or images. Real
    formats keep only the codes of their validation images: the reference is then the
    VQ's reconstruction of them, so FID measures the model, not the tokenizer's loss."""
    if fid is None or not gen or generation_unsupported(run) is not None:
        return None
    what = "validation images"
    if refs is None:
        refs = run.vq.decode(run.data.val["generation"].codes[: len(gen)].long())
        what = "VQ reconstructions of the validation images"
    device = next(run.model.parameters()).device
    return FidReference.of(fid, refs, what, settings.batch_size, device)
