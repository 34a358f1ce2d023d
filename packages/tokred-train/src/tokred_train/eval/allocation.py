"""The paper's attention-allocation diagnostic (PAPER.md section 1) over validation data.

Runs `tokred_models.probe.AttentionProbe` over batches of held-out samples of both tasks
(teacher-forced: the full sequence with its answer / image, as in training) and turns the
summed attention mass into the JSON the report and the figures read:

    {"understanding": {"segments": [...], "num_samples": n, "shares": [[...] per layer],
                       "shares_by_query": [[[...]]], "image_share_first": ..., ...},
     "generation": {...}, "policy": ..., "paper": {...}}

`shares[l][s]` is Eq. 2: the share of layer l's attention mass that key segment s receives
(each layer sums to 1). For generation the image *is* the output segment, so its image
column is 0 and the output column is the image tokens.

The probe sees the attention the model actually computes: under a reduction (HiMix) image
tokens are not queries, so pass `policies="none"` to diagnose the full attention of a
reduced-trained model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from tokred_core import TokredError
from tokred_models import patched_model
from torch import nn

from .decode import reduction_context

__all__ = ["PAPER_PIES", "attention_allocation", "allocation_summary", "allocation_to_dict"]

#: The paper's pies (VILA-U 7B, 32 layers), percentages per key segment.
PAPER_PIES: dict[str, dict[str, dict[str, float]]] = {
    "understanding": {
        "first": {"system": 21.3, "image": 32.6, "instruction": 8.6, "output": 37.5},
        "last": {"system": 55.4, "image": 7.5, "instruction": 10.6, "output": 26.5},
    },
    "generation": {
        "first": {"system": 24.8, "instruction": 35.5, "output": 39.7},
        "last": {"system": 34.4, "instruction": 9.2, "output": 56.4},
    },
}


def attention_allocation(
    model: nn.Module,
    data: Any,
    num_samples: int = 32,
    batch_size: int = 16,
    split: str = "val",
    policies: Any = None,
    chunk_size: int = 256,
):
    """AllocationResult over the first `num_samples` samples of each task of `data`
    (a TrainData; split "val", or "train" when there is no held-out data).

    policies: None measures the model as patched (its run's reduction); e.g. "none" the
    full attention (the patch's image projection sets stay in use).
    """
    from tokred_models.probe import AttentionProbe

    from ..run.step import TrainStep, batch_targets

    samples = data.val if split == "val" else data.train
    sizes = {
        task: min(num_samples, len(samples.get(task, ())))
        for task in ("understanding", "generation")
    }
    if not any(sizes.values()):
        raise TokredError(
            f"no {split} samples to probe: the run has no held-out data (raise data.num_val)"
        )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with (
            reduction_context(model, "reduced", policies),
            AttentionProbe(model, chunk_size) as probe,
        ):
            step = TrainStep(patched_model(model), data.loss_path)
            with torch.no_grad():
                for task, n in sizes.items():
                    for start in range(0, n, batch_size):
                        idx = list(range(start, min(start + batch_size, n)))
                        batch = data.collate({task: idx}, split=split)
                        # The training step's forward: the family's own input path (Janus:
                        # SigLIP pixels, code embeddings), under the plan the probe reads.
                        step(batch, batch_targets(batch, data.loss_path).to(device))
            result = probe.result()
    finally:
        model.train(was_training)
    return result


def allocation_to_dict(result: Any, **extra: Any) -> dict[str, Any]:
    """AllocationResult (or its to_dict) -> the JSON above, with per-task summaries."""
    raw = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    out: dict[str, Any] = {}
    for task in ("understanding", "generation"):
        if task not in raw:
            continue
        entry = dict(raw[task])
        entry.update(allocation_summary(entry, task))
        out[task] = entry
    out.update(extra)
    out["paper"] = PAPER_PIES
    return out


def allocation_summary(entry: Mapping[str, Any], task: str) -> dict[str, Any]:
    """First / last layer shares, the image-modality share per layer and its extremes, and
    the image share seen from each query segment (e.g. the instruction queries, whose last
    token predicts the answer).

    The image modality is the IMAGE segment for understanding and the OUTPUT segment (the
    generated image tokens) for generation.
    """
    segments = list(entry["segments"])
    shares = entry["shares"]
    if not shares:
        return {}
    image_col = segments.index("output" if task == "generation" else "image")
    image_share = [row[image_col] for row in shares]
    named = [{s: row[i] for i, s in enumerate(segments)} for row in shares]
    by_query = entry.get("shares_by_query") or []
    image_by_query = {
        q: [layer[qi][image_col] for layer in by_query]
        for qi, q in enumerate(segments)
        if by_query and any(sum(layer[qi]) > 0 for layer in by_query)
    }
    return {
        "image_share_by_query_segment": image_by_query,
        "first_layer": named[0],
        "last_layer": named[-1],
        "image_segment": segments[image_col],
        "image_share_per_layer": image_share,
        "image_share_first": image_share[0],
        "image_share_last": image_share[-1],
        "image_share_middle_mean": (
            sum(image_share[1:-1]) / (len(image_share) - 2) if len(image_share) > 2 else None
        ),
        "image_share_min_layer": int(min(range(len(image_share)), key=image_share.__getitem__)),
        "image_share_max_layer": int(max(range(len(image_share)), key=image_share.__getitem__)),
        "top_segment_per_layer": [max(row, key=row.get) for row in named],
    }
