"""Running the study's grid: every run of every arm at every seed, resumable.

Layout of the study folder:

    runs/<arm>/<kind>/seed-<s>/      one training run (kind: unified, isolated-<task>;
                                     <arm>: the arm's name, %-escaped: arms.arm_folder)
        config.yaml metrics.jsonl summary.json checkpoints/ eval/eval.json
        result.json                  its scores, step time, tokens/s, memory: written last
    runs/<arm>/<kind>/seed-<s>.partial/   a run in progress

A run trains into its `.partial` folder with `run.resume=true`, so an interrupted study
continues it from its newest checkpoint; it is renamed to its final name only when it has
trained, been evaluated and written result.json. So a run folder is complete or absent,
and rerunning the same study reuses every complete run.

Seeds pair the arms: seed s sets `run.seed` (initial weights, batch order) in every run of
every arm, and the data set (data.seed) is the same for all.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from tokred_core import TokredError

from ..atomic import atomic_write_text, fsync_dir
from ..built_run import build_train_data
from ..config import TrainConfig, check_policies_fit, load_config
from ..data.training_data import TrainData
from ..eval.fid import FeatureExtractor, load_feature_extractor
from ..eval.run import evaluate_run, run_from_result
from ..run.loop import RunResult, train
from .arms import Arm, RunSpec, arm_folder
from .conflict import layer_profile, read_conflict
from .cost import decoder_shape_of, steps_for_tokens, training_tokens
from .gate import read_gate
from .strategy_cost import run_flops

__all__ = ["BUDGETS", "Budget", "RunRecord", "StudyRunner", "RESULT_FILE"]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
#: matched: an isolated run trains on the unified run's samples of its task, same steps;
#: full-batch: whole batches of its task, same steps; tokens: whole batches of its task
#: for as many steps as it takes to train on as many tokens as the unified run.
Budget = Literal["matched", "full-batch", "tokens"]
BUDGETS: tuple[str, ...] = ("matched", "full-batch", "tokens")
#: Optimizer steps whose batches the cost model prices per run (the first ones; the mix
#: repeats, and the later steps take their prices: study/strategy_cost.py).
FLOPS_BATCHES = 50


@dataclass
class RunRecord:
    """What the study keeps of one finished run (result.json)."""

    arm: str
    kind: str
    seed: int
    scores: dict[str, float]
    """Per trained task: understanding accuracy; generation FID when the study has FID
    weights, else its detector score, else its validation loss (see `score_kinds`)."""
    score_kinds: dict[str, str]
    step_time_s: float | None
    tokens_per_s: float | None
    peak_memory_bytes: int | None
    """CUDA's max allocated on a GPU; None on the CPU, where the only measure is the
    process's max RSS, which in one study process only ever grows from run to run."""
    forward_flops: int
    """Cost-model forward FLOPs of every step the run trained, with its strategy
    (study/strategy_cost.py); the cost ratios compare these."""
    steps: int
    tokens_trained: int | None = None
    """Tokens (attention mask ones) of all the run's micro-batches, counted from its
    seeded sampler, so a resumed run counts them all."""
    reused_from: str | None = None
    """The arm whose run this is, when this arm's run trains the same (run_all)."""
    conflict: dict[str, Any] | None = None
    """Unified runs that measured it (run.conflict_every): the model-wide ('total' group)
    cosine and adjusted cosine between the tasks' gradients by layer, mean over the
    measurements (study/conflict.py's layer_profile)."""
    flops_detail: dict[str, Any] | None = None
    """What forward_flops is made of (strategy_cost.RunFlops): the same steps reduced
    throughout and unreduced throughout, full, distilled and gated steps, steps priced."""

    @property
    def flops_per_step(self) -> float:
        """forward_flops over the steps it prices: what the FLOPs ratios compare, so a
        record written before strategies (forward_flops then priced the first
        FLOPS_BATCHES steps, with no flops_detail) still compares with a new one."""
        steps = self.flops_detail["steps"] if self.flops_detail else FLOPS_BATCHES
        return self.forward_flops / max(steps, 1)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StudyRunner:
    """Trains and evaluates the runs of a study into `out_dir/runs`."""

    def __init__(
        self,
        config: TrainConfig,
        out_dir: Path,
        *,
        budget: Budget = "matched",
        num_understanding: int = 400,
        num_generation: int = 400,
        jobs: int = 1,
        on_event: Callable[[str], None] | None = None,
        fid_weights: str | Path | None = None,
    ) -> None:
        if budget not in BUDGETS:
            raise TokredError(f"budget {budget!r}: use one of {', '.join(BUDGETS)}")
        if jobs < 1:
            raise TokredError(f"--jobs {jobs}: need at least 1")
        self.jobs = jobs
        self.config = config
        self.out_dir = Path(out_dir)
        self.budget = budget
        self._data: TrainData | None = None  # built once, for the token budget
        self._unified_tokens: dict[int, int] = {}  # per seed
        self.num_understanding = num_understanding
        self.num_generation = num_generation
        self.say = on_event or (lambda message: log.info("%s", message))
        # The path travels to worker processes (picklable); each loads the network once.
        self.fid_weights = None if fid_weights is None else Path(fid_weights)
        self._fid: FeatureExtractor | None = None

    def feature_extractor(self) -> FeatureExtractor | None:
        """The FID network, loaded on first use; None when the study scores no FID."""
        if self.fid_weights is not None and self._fid is None:
            self._fid = load_feature_extractor(self.fid_weights)
        return self._fid

    def run_dir(self, spec: RunSpec, seed: int) -> Path:
        return self.out_dir / "runs" / arm_folder(spec.arm) / spec.kind / f"seed-{seed}"

    def run_config(self, arm: Arm, spec: RunSpec, seed: int, out_dir: Path) -> TrainConfig:
        overrides = [
            *arm.overrides(spec, self.config),
            f"run.seed={seed}",
            f"run.out_dir={out_dir}",
            # Resume only what an interrupted study left (and say nothing otherwise).
            f"run.resume={str(Path(out_dir).is_dir()).lower()}",
            "run.progress=false",
        ]
        if len(spec.train_tasks) == 1:
            overrides.append("run.conflict_every=0")  # conflict needs both tasks trained
        if self.budget != "matched" and len(spec.train_tasks) == 1:
            # Whole batches of the task: the unified run's samples per step.
            ratio = 1.0 if spec.train_tasks[0] == "understanding" else 0.0
            overrides.append(f"data.understanding_ratio={ratio}")
            if self.budget == "tokens":
                steps = self.steps_for_unified_tokens(load_config(self.config, overrides), seed)
                overrides.append(f"optim.max_steps={steps}")
        return load_config(self.config, overrides)

    def steps_for_unified_tokens(self, isolated: TrainConfig, seed: int) -> int:
        """Steps of the isolated run `isolated` that train on as many tokens as the
        unified run of the same seed (the sampler is seeded, so both are exact)."""
        if self._data is None:
            self._data = build_train_data(self.config)
        if seed not in self._unified_tokens:
            unified = load_config(self.config, [f"run.seed={seed}"])
            self._unified_tokens[seed] = training_tokens(self._data, unified)
        return steps_for_tokens(self._data, isolated, self._unified_tokens[seed])

    def check(self, arms: Sequence[Arm], seeds: Sequence[int]) -> None:
        """Every run's config loads and its policies fit the model, and the FID network
        (if any) reads, before any training."""
        if self.fid_weights is not None and self.num_generation < 2:
            raise TokredError(f"--generation {self.num_generation}: FID needs at least 2 prompts")
        self.feature_extractor()
        num_layers = model_num_layers(self.config)
        for arm in arms:
            for spec in arm.runs():
                try:
                    cfg = self.run_config(arm, spec, seeds[0], self.run_dir(spec, seeds[0]))
                    check_policies_fit(cfg.reduction, num_layers)
                except TokredError as exc:
                    raise TokredError(f"arm {arm.name!r}: {exc}") from None

    def completed(self, spec: RunSpec, seed: int) -> RunRecord | None:
        path = self.run_dir(spec, seed) / RESULT_FILE
        if not path.is_file():
            return None
        return RunRecord(**json.loads(path.read_text(encoding="utf-8")))

    def _reused(self, spec: RunSpec, seed: int) -> RunRecord | None:
        """The record of a complete run, said to be reused; None when it is not complete."""
        done = self.completed(spec, seed)
        if done is not None:
            self.say(f"{spec.arm} {spec.kind} seed {seed}: complete, reused")
        return done

    def run(self, arm: Arm, spec: RunSpec, seed: int) -> RunRecord:
        """The run's record: read back when complete, else trained, evaluated, then renamed."""
        done = self._reused(spec, seed)
        if done is not None:
            return done
        final = self.run_dir(spec, seed)
        if final.exists():  # a folder without result.json is not ours to keep as complete
            raise TokredError(
                f"{final} exists but holds no {RESULT_FILE}: it is not a complete study run; "
                "move it away and rerun the study"
            )
        partial = final.with_name(final.name + ".partial")
        cfg = self.run_config(arm, spec, seed, partial)
        self.say(f"{spec.arm} {spec.kind} seed {seed}: training {cfg.optim.max_steps} steps")
        result = train(cfg)
        record = self._record(arm, spec, seed, result, partial)
        atomic_write_text(partial / RESULT_FILE, json.dumps(record.to_dict(), indent=2) + "\n")
        fsync_dir(partial)
        os.replace(partial, final)
        fsync_dir(final.parent)
        return record

    def _record(
        self, arm: Arm, spec: RunSpec, seed: int, result: RunResult, run_dir: Path
    ) -> RunRecord:
        tasks = spec.train_tasks
        ev = evaluate_run(
            run_from_result(result),
            run_dir / "eval",
            num_understanding=self.num_understanding if "understanding" in tasks else 0,
            num_generation=self.num_generation if "generation" in tasks else 0,
            seed=seed,
            fid=self.feature_extractor() if "generation" in tasks else None,
        )
        scores, kinds = _scores(ev, result.metrics, tasks)
        summary = result.summary
        flops = _run_flops(result, run_dir)
        return RunRecord(
            arm=arm.name,
            kind=spec.kind,
            seed=seed,
            scores=scores,
            score_kinds=kinds,
            step_time_s=summary.get("step_time_s"),
            tokens_per_s=summary.get("tokens_per_s"),
            peak_memory_bytes=(
                summary.get("peak_memory_bytes")
                if summary.get("peak_memory_kind") == "cuda_max_memory_allocated"
                else None
            ),
            forward_flops=flops.forward_flops,
            flops_detail=flops.to_dict(),
            steps=result.last_step,
            tokens_trained=training_tokens(result.data, result.config),
            conflict=_conflict_profile(run_dir) if len(tasks) == 2 else None,
        )

    def run_all(self, arms: Sequence[Arm], seeds: Sequence[int]) -> list[RunRecord]:
        """Every run, seed by seed (so a stopped study has whole seeds done first). A run
        that trains the same as one of an earlier arm (`Arm.run_identity`: e.g. HiMix on
        understanding alone, under modality or task sharing) is trained once: the later
        arm's record is a copy that names the run it comes from (`reused_from`).

        `jobs` > 1 trains that many runs at once, each in its own process (give each run
        one core: run.threads). Their step times are then measured side by side with
        other runs, which the report states.
        """
        order: list[tuple[Arm, RunSpec, int]] = []
        source_of: list[int] = []  # per entry: the index of the entry that trains it
        for seed in seeds:
            first: dict[tuple[str, ...], int] = {}
            for arm in arms:
                for spec in arm.runs():
                    index = first.setdefault(arm.run_identity(spec), len(order))
                    order.append((arm, spec, seed))
                    source_of.append(index)
        trained = [i for i, source in enumerate(source_of) if source == i]
        done = self._train(order, trained)
        records = []
        for i, (arm, spec, seed) in enumerate(order):
            source = done[source_of[i]]
            if source_of[i] != i:
                self.say(f"{spec.arm} {spec.kind} seed {seed}: same as {source.arm}'s")
                source = replace(source, arm=arm.name, reused_from=source.arm)
            records.append(source)
        return records

    def _train(
        self, order: Sequence[tuple[Arm, RunSpec, int]], which: Sequence[int]
    ) -> dict[int, RunRecord]:
        jobs = self.jobs
        if jobs == 1:
            return {i: self.run(*order[i]) for i in which}
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        # Complete runs are read here: a worker process per run would only start to read them.
        done = {i: r for i in which if (r := self._reused(*order[i][1:])) is not None}
        todo = iter([i for i in which if i not in done])
        # spawn: a fresh interpreter per worker (no fork of a process holding torch threads).
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_stop_with, initargs=(os.getpid(),)
        )
        running: dict[Any, int] = {}

        def submit_next() -> None:
            i = next(todo, None)
            if i is not None:
                running[pool.submit(_run_in_worker, self._settings(), *order[i])] = i

        # One run per free worker, the next only when one ends: the pool moves submitted
        # runs into its workers' queue at once, where they can no longer be cancelled, so
        # a stopped study (Ctrl-C reaches every worker: their runs checkpoint and stop)
        # would still train each queued run before it exits.
        with pool:
            for _ in range(jobs):
                submit_next()
            self.say(f"{len(which) - len(done)} runs queued for {jobs} workers")
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    done[i] = future.result()
                    spec, seed = order[i][1], order[i][2]
                    self.say(
                        f"{spec.arm} {spec.kind} seed {seed}: trained ({len(done)}/{len(which)})"
                    )
                    submit_next()
        return done

    def _settings(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "out_dir": self.out_dir,
            "budget": self.budget,
            "num_understanding": self.num_understanding,
            "num_generation": self.num_generation,
            "fid_weights": self.fid_weights,
        }


#: Set in a worker whose study process is gone (`_stop_with`).
_ORPHANED = threading.Event()


def _stop_with(parent: int) -> None:
    """A worker's initializer: when the study process is gone (killed, or stopped by a
    SIGTERM that ran no handler of ours), the worker sends itself SIGTERM, so its run
    checkpoints and stops (run/interrupt.py) instead of training on, orphaned, into a
    folder a rerun of the study is training into too."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        _ORPHANED.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tokred-study-parent-watch", daemon=True).start()


def _run_in_worker(settings: dict[str, Any], arm: Arm, spec: RunSpec, seed: int) -> RunRecord:
    """One run in a worker process of `StudyRunner.run_all(jobs > 1)`."""
    try:
        return StudyRunner(**settings).run(arm, spec, seed)
    except KeyboardInterrupt:
        if _ORPHANED.is_set():  # nobody is left to take the result: the pool would wait on
            os._exit(128 + signal.SIGTERM)  # its queue forever
        raise


def _scores(
    ev: dict[str, Any], metrics: dict[str, Any], tasks: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Each trained task's score and what it is. Generation is scored by FID when the
    evaluation measured it (the study has FID weights), else by the detector (the shapes
    set), else by the validation image-token loss; FID and loss: lower is better."""
    scores: dict[str, float] = {}
    kinds: dict[str, str] = {}
    if "understanding" in tasks:
        und = ev.get("understanding")
        if und is None:
            raise TokredError("the study's understanding runs need validation questions")
        scores["understanding"], kinds["understanding"] = float(und["accuracy"]), "accuracy"
    if "generation" in tasks:
        gen = ev.get("generation", {})
        if "fid" in gen:
            scores["generation"], kinds["generation"] = float(gen["fid"]), "fid"
        elif "accuracy" in gen:
            scores["generation"], kinds["generation"] = float(gen["accuracy"]), "detector"
        elif metrics.get("val_loss_generation") is not None:
            scores["generation"] = float(metrics["val_loss_generation"])
            kinds["generation"] = "val_loss"
        else:
            raise TokredError(
                "generation has neither a detector score nor a validation loss: keep "
                "eval.at_end=true and data.num_val above 0"
            )
    return scores, kinds


def _run_flops(result: RunResult, run_dir: Path):
    """The cost model's price of the run as it trained (strategy included); a gating run's
    layers run full are read from the gate.jsonl it wrote."""
    shape = decoder_shape_of(result.built.base)
    gates = result.config.strategy.gate_threshold is not None
    return run_flops(
        result.data,
        result.config,
        result.handle.policies,
        shape,
        result.last_step,
        FLOPS_BATCHES,
        gate=read_gate(run_dir, shape.num_layers) if gates else None,
    )


def _conflict_profile(run_dir: Path) -> dict[str, Any] | None:
    conflict = read_conflict(run_dir)
    if not conflict["steps"]:
        return None
    adjusted = layer_profile(conflict, "total", "adjusted_cosine")
    cosine = layer_profile(conflict, "total", "cosine")
    return {
        "layers": adjusted["layers"],
        "adjusted_cosine": adjusted["mean"],
        "cosine": cosine["mean"],
        "measurements": len(conflict["steps"]),
    }


def model_num_layers(config: TrainConfig) -> int:
    """The decoder depth of the config's model, read without building it."""
    if config.model.kind == "tiny":
        return config.model.num_layers
    from tokred_core import load_shape

    return load_shape(Path(config.model.path).expanduser() / "config.json").num_layers
