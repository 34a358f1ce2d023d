"""Gradient conflict between the two tasks, measured during a run (run.conflict_every).

Why: the paper (PAPER.md section 4) explains the synergy lost under task-specific token
dropping by a hypothesis it never tests: the tasks come to use divergent pathways, so their
gradients fragment. This measures it, as Uni-X (arXiv 2509.24365, tools/analyze_model_grad.py)
defines it: per layer and parameter group, the cosine between the understanding and the
generation loss gradients, minus the cosine between the gradients of two random halves of
mixed data (both tasks pooled). The baseline says how alike two gradients of one
distribution are at this probe size, so the adjusted cosine is about 0 when the tasks agree
as well as any two batches do, and negative when they pull apart.

The probe, fixed for the run: the first run.conflict_samples training samples of each task;
the pool of both split once into halves A and B by a permutation seeded with run.seed. Its
four cells (understanding in A, in B, generation in A, in B) go through the training forward
(`TrainStep`: the run's reduction, autocast and train mode), a backward each giving the
gradient G of the cell's summed loss. Every gradient the measure needs is a sum of those:

    g_understanding = (G_uA + G_uB) / n_u        g_A = (G_uA + G_gA) / n_A
    g_generation    = (G_gA + G_gB) / n_g        g_B = (G_uB + G_gB) / n_B

(n: target tokens, so each is a token-mean loss gradient like the training loss's). One
measurement is one forward and backward over 2 x run.conflict_samples samples, in batches
of optim.batch_size; it holds the four cells' gradients at once (four copies of the
trainable gradients), and keeps per parameter only their 4 x 4 Gram matrix, since a group's
dot products and norms are sums of its parameters' Grams. The cells are exact because the
samples of a batch are independent (each its own mask and plan): a batch's summed loss is
the sum over its samples (the test checks against mixed batches computed directly).

conflict.jsonl (one row per group and measurement):
    step             optimizer steps taken before the measurement
    layer            decoder layer index; null outside the layers and for the model total
    group            in a layer: q_proj, k_proj, v_proj, o_proj, image_proj.<set> (the
                     projection sets reduction adds), mlp, norm (else the module's first
                     name); outside: the module path (model.embed_tokens, model.norm,
                     lm_head); "total": all groups of the layer (or, layer null, the model)
    cosine           cos(g_understanding, g_generation); null when either is zero (a group
                     only one task reaches, e.g. the other task's image projections)
    baseline_cosine  cos(g_A, g_B)
    adjusted_cosine  cosine - baseline_cosine
    norm_ratio       |g_understanding| / |g_generation| (null when the latter is zero)
    norm_understanding, norm_generation, numel (parameters in the group)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from tokred_core import TokredError
from tokred_models import patched_model, reduction_handle
from torch import nn

from ..data.training_data import TrainData
from .step import BatchTargets, TrainStep, batch_targets

__all__ = [
    "CONFLICT_FILE",
    "TOTAL",
    "ConflictProbe",
    "conflict_stats",
    "layer_group",
    "outer_group",
    "parameter_groups",
    "probe_halves",
]

CONFLICT_FILE = "conflict.jsonl"
TOTAL = "total"
TASKS = ("understanding", "generation")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_IMAGE_PROJ = "image_proj"  # tokred_models.projections.IMAGE_PROJ_ATTR
# Module names peft inserts under the module it adapts: a group is named by that module.
_PEFT_PARTS = frozenset(
    {
        "base_layer",
        "lora_A",
        "lora_B",
        "lora_embedding_A",
        "lora_embedding_B",
        "lora_magnitude_vector",
        "modules_to_save",
        "original_module",
    }
)
#: The probe's cells, in Gram order: (task index, half).
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))
_PAIRS = [(a, b) for a in range(len(CELLS)) for b in range(a, len(CELLS))]


# ---- parameter groups ---------------------------------------------------------------------
def layer_group(name: str) -> str:
    """The group of a parameter named relative to its decoder layer
    (`self_attn.image_proj.generation.q_proj.lora_A.default.weight` -> image_proj.generation)."""
    parts = name.split(".")[:-1]  # the module path; the last part is the parameter itself
    if _IMAGE_PROJ in parts:
        at = parts.index(_IMAGE_PROJ)
        return ".".join(parts[at : at + 2])
    for proj in _ATTENTION:
        if proj in parts:
            return proj
    if any("norm" in part for part in parts):  # layer norms, and q/k norms (Chameleon)
        return "norm"
    return parts[0] if parts else name


def outer_group(name: str) -> str:
    """The group of a parameter outside the decoder layers: its module path, cut before
    peft's inserted modules and before any index (`lm_head.modules_to_save.default.weight`
    -> lm_head; a vision tower's `...encoder.layers.3.mlp.fc1.weight` -> ...encoder.layers)."""
    parts = name.split(".")[:-1] or [name]
    kept = []
    for part in parts:
        if part in _PEFT_PARTS or part.isdigit():
            break
        kept.append(part)
    return ".".join(kept) or name


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a reduction-patched model (the ones its plans run)."""
    patched = patched_model(model)
    return reduction_handle(patched).adapter.layers(patched)


def parameter_groups(model: nn.Module) -> dict[str, tuple[int | None, str]]:
    """Every trainable parameter of a reduction-patched model, by name (as
    `model.named_parameters()` gives it, each shared tensor once) -> (layer, group)."""
    where: dict[int, tuple[int, str]] = {}
    for index, layer in enumerate(decoder_layers(model)):
        for name, p in layer.named_parameters():
            where.setdefault(id(p), (index, name))
    groups: dict[str, tuple[int | None, str]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in where:
            index, inner = where[id(p)]
            groups[name] = (index, layer_group(inner))
        else:
            groups[name] = (None, outer_group(name))
    return groups


# ---- the probe ----------------------------------------------------------------------------
def probe_halves(
    sizes: Mapping[str, int], samples_per_task: int, seed: int
) -> list[dict[str, list[int]]]:
    """Halves A and B of the probe, {task: training sample indices} each: the first
    `samples_per_task` samples of each task, pooled and split by a permutation seeded with
    `seed` (its own generator: the global RNG is not touched)."""
    pool = [(t, i) for t in TASKS for i in range(min(samples_per_task, sizes.get(t, 0)))]
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = len(pool) // 2
    halves = []
    for part in (order[:cut], order[cut:]):
        chosen = sorted(pool[k] for k in part)
        halves.append({t: [i for task, i in chosen if task == t] for t in TASKS})
    return halves


@dataclass
class _Cell:
    """One task's samples of one half, collated once in batches, with their targets."""

    batches: list[tuple[dict[str, Any], BatchTargets]]
    tokens: int
    """Target tokens of the cell's task."""


class ConflictProbe:
    """The fixed probe of a run and the measurement on it (see the module docstring).

    `measure` leaves every parameter's .grad as it found it; the caller keeps the RNG
    state (dropout, or anything else in the forward, may draw from it) and excludes the time from steps.
    """

    def __init__(
        self,
        step_module: TrainStep,
        data: TrainData,
        samples_per_task: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        sizes = data.sizes()
        missing = [t for t in TASKS if not sizes.get(t)]
        if missing:
            raise TokredError(
                f"run.conflict_every: the conflict between the tasks needs training samples "
                f"of both; there are none of {', '.join(missing)} (set run.conflict_every=0)"
            )
        self.step_module, self.device, self.autocast = step_module, device, autocast
        self.samples_per_task = samples_per_task
        groups = parameter_groups(step_module.model)
        named = dict(step_module.model.named_parameters())
        self.names = list(groups)
        self.keys = [groups[n] for n in self.names]
        self.params = [named[n] for n in self.names]
        self.halves = probe_halves(sizes, samples_per_task, seed)
        self.cells = [
            self._cell(data, TASKS[t], self.halves[h][TASKS[t]], batch_size, t) for t, h in CELLS
        ]
        self.measurements = 0
        self.passes = 0
        self.seconds = 0.0

    @staticmethod
    def _cell(data: TrainData, task: str, idx: list[int], batch_size: int, t: int) -> _Cell:
        batches = []
        for start in range(0, len(idx), batch_size):
            batch = data.collate({task: idx[start : start + batch_size]})
            batches.append((batch, batch_targets(batch, data.loss_path)))
        return _Cell(batches, sum(targets.counts[t] for _, targets in batches))

    @property
    def tokens(self) -> list[int]:
        return [cell.tokens for cell in self.cells]

    def _cell_gradients(self, cell: _Cell) -> list[torch.Tensor | None]:
        """The gradient of the cell's summed loss, per parameter (None: not reached)."""
        for p in self.params:
            p.grad = None
        for batch, targets in cell.batches:
            with self.autocast():
                part = self.step_module(batch, targets.to(self.device))
            part.sum().backward()
            self.passes += 1
        grads = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        return grads

    def cell_grams(self) -> torch.Tensor:
        """(parameters, 4, 4) float64 on the CPU: the Gram matrix of the cells' gradients of
        each parameter. Leaves every .grad as it was."""
        saved = [p.grad for p in self.params]
        try:
            grads = [self._cell_gradients(cell) for cell in self.cells]
        finally:
            for p, g in zip(self.params, saved, strict=True):
                p.grad = g
        zero = torch.zeros((), dtype=torch.float32, device=self.device)
        dots = []
        for i in range(len(self.params)):
            flat = [None if g[i] is None else g[i].reshape(-1).float() for g in grads]
            dots.append(
                torch.stack(
                    [
                        zero if flat[a] is None or flat[b] is None else torch.dot(flat[a], flat[b])
                        for a, b in _PAIRS
                    ]
                )
            )
        values = torch.stack(dots).double().cpu()  # the one host sync of the measurement
        grams = torch.zeros(len(self.params), len(CELLS), len(CELLS), dtype=torch.float64)
        for k, (a, b) in enumerate(_PAIRS):
            grams[:, a, b] = grams[:, b, a] = values[:, k]
        return grams

    def measure(self, step: int) -> list[dict[str, Any]]:
        """The rows of conflict.jsonl for the model as it stands after `step` steps."""
        started = time.perf_counter()
        grams = self.cell_grams()
        rows = conflict_rows(step, self.keys, [p.numel() for p in self.params], grams, self.tokens)
        self.measurements += 1
        self.seconds += time.perf_counter() - started
        return rows

    def cost(self) -> dict[str, Any]:
        """What the measurements of this run cost (for the run summary)."""
        return {
            "file": CONFLICT_FILE,
            "samples_per_task": {t: sum(len(half[t]) for half in self.halves) for t in TASKS},
            "measurements": self.measurements,
            "time_s": self.seconds,
            "time_per_measurement_s": self.seconds / self.measurements
            if self.measurements
            else None,
            "forward_backward_passes": self.passes,
            "passes_per_measurement": sum(len(cell.batches) for cell in self.cells),
        }


# ---- the statistics ------------------------------------------------------------------------
def _weights(tokens: Sequence[int]) -> dict[str, torch.Tensor]:
    """Each gradient of the measure as weights over the cells (token means)."""
    members = {
        "understanding": (0, 1),
        "generation": (2, 3),
        "half_a": (0, 2),
        "half_b": (1, 3),
    }
    out = {}
    for name, cells in members.items():
        n = sum(tokens[c] for c in cells)
        w = torch.zeros(len(CELLS), dtype=torch.float64)
        if n:
            w[list(cells)] = 1.0 / n
        out[name] = w
    return out


def _cosine(dot: float, sq_a: float, sq_b: float) -> float | None:
    if sq_a <= 0.0 or sq_b <= 0.0:
        return None
    return max(-1.0, min(1.0, dot / math.sqrt(sq_a * sq_b)))


def conflict_stats(gram: torch.Tensor, tokens: Sequence[int]) -> dict[str, float | None]:
    """The measure of one group from its cells' Gram matrix (4, 4) and the cells' target
    tokens: cosine, baseline_cosine, adjusted_cosine, norm_ratio and both norms."""
    w = _weights(tokens)

    def dot(a: str, b: str) -> float:
        return float(w[a] @ gram @ w[b])

    sq_u, sq_g = (
        max(dot("understanding", "understanding"), 0.0),
        max(dot("generation", "generation"), 0.0),
    )
    cosine = _cosine(dot("understanding", "generation"), sq_u, sq_g)
    baseline = _cosine(
        dot("half_a", "half_b"),
        max(dot("half_a", "half_a"), 0.0),
        max(dot("half_b", "half_b"), 0.0),
    )
    return {
        "cosine": cosine,
        "baseline_cosine": baseline,
        "adjusted_cosine": None if cosine is None or baseline is None else cosine - baseline,
        "norm_ratio": math.sqrt(sq_u / sq_g) if sq_g > 0.0 else None,
        "norm_understanding": math.sqrt(sq_u),
        "norm_generation": math.sqrt(sq_g),
    }


def conflict_rows(
    step: int,
    keys: Sequence[tuple[int | None, str]],
    numels: Sequence[int],
    grams: torch.Tensor,
    tokens: Sequence[int],
) -> list[dict[str, Any]]:
    """One row per (layer, group) in the order the parameters come, then each layer's total,
    then the model's total. `keys`, `numels` and `grams` run over the same parameters."""
    summed: dict[tuple[int | None, str], list[Any]] = {}

    def add(key: tuple[int | None, str], gram: torch.Tensor, numel: int) -> None:
        entry = summed.setdefault(key, [torch.zeros_like(gram), 0])
        entry[0] += gram
        entry[1] += numel

    for key, numel, gram in zip(keys, numels, grams, strict=True):
        add(key, gram, numel)
    layers = sorted({layer for layer, _ in keys if layer is not None})
    for layer in layers:
        for key, numel, gram in zip(keys, numels, grams, strict=True):
            if key[0] == layer:
                add((layer, TOTAL), gram, numel)
    for numel, gram in zip(numels, grams, strict=True):
        add((None, TOTAL), gram, numel)
    return [
        {"step": step, "layer": layer, "group": group, **conflict_stats(gram, tokens), "numel": n}
        for (layer, group), (gram, n) in summed.items()
    ]
