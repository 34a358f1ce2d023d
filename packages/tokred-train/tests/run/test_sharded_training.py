"""Two real processes under torchrun (gloo on the CPU): DDP without
find_unused_parameters and FSDP2 (`run.distributed=fsdp`) each train exactly what one
process trains on the same global batch, even when rank 0's micro-batches hold only
understanding samples and rank 1's only generation samples (batch 1 per rank at an even
mix: global micro-batch [understanding, generation], rank r takes sample r); sharded
checkpoints resume on another world size and into the other format."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from tokred_train.run.checkpoint import CHECKPOINT_DIR, MARKER, find_latest_checkpoint
from tokred_train.testing import torchrun_env

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, torch
    from tokred_train import train
    from tokred_train.run.distributed import dist_info, shutdown_distributed
    from tokred_train.testing import HIMIX_HMGEN, tiny_run_config

    out, batch_size, run, stop = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), None
    stop = run.pop("stop_after_step", None)
    cfg = tiny_run_config(
        out + "/run",
        lora=run.pop("lora", {}),
        reduction=HIMIX_HMGEN,
        data={"understanding_ratio": 0.5},
        optim={"batch_size": batch_size, "max_steps": 4, "grad_accum": 2},
        run={"log_every": 1, "log_samples": True, "save_final": False, **run},
    )
    result = train(cfg, stop_after_step=stop)
    info = dist_info()
    sharded = [hasattr(p, "full_tensor") for p in result.model.parameters()]
    weights = {}
    for name, p in result.model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        weights[name] = full.detach().clone()
    tasks = "/proc/self/task"  # every thread, the ones C++ started too (Linux)
    threads = [open(f"{tasks}/{t}/comm").read().strip() for t in os.listdir(tasks)]
    autograd_threads = sum(name.startswith("pt_autograd") for name in threads)
    if info.is_main:
        saved = {"weights": weights, "sharded": all(sharded), "autograd_threads": autograd_threads}
        torch.save(saved, out + "/weights.pt")
    shutdown_distributed(info)
    """
)


def _launch(folder, nproc: int, batch_size: int, **run) -> dict:
    folder.mkdir(exist_ok=True)
    script = folder / "job.py"
    script.write_text(SCRIPT)
    env = torchrun_env()
    args = [str(script), str(folder), str(batch_size), json.dumps(run)]
    cmd = [sys.executable, *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(folder / "weights.pt")


def _rows(folder, name="metrics.jsonl"):
    return [json.loads(line) for line in (folder / "run" / name).read_text().splitlines()]


def _same_losses(got, expected):
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got, strict=True):
        for key in ("loss", "loss_understanding", "loss_generation", "tokens", "samples"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (b["step"], key)


def _same_weights(got, expected):
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, the global batch of 2, four steps uninterrupted."""
    folder = tmp_path_factory.mktemp("single") / "job"
    return folder, _launch(folder, 1, 2)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_one_task_per_rank_trains_what_one_process_trains(tmp_path, single, mode):
    folder, expected = single
    got = _launch(tmp_path / mode, 2, 1, distributed=mode)
    assert got["sharded"] == (mode == "fsdp")
    if not torch.cuda.is_available():
        # No CUDA autograd threads on a CPU rank, even after FSDP2's fake CUDA guard: they
        # raced the interpreter's teardown (sharding._count_autograd_devices_now).
        assert got["autograd_threads"] == 0
    # Rank 0 was logged: its micro-batches hold understanding samples only.
    seen = _rows(tmp_path / mode, "samples.jsonl")
    assert seen and all(r.get("generation") == [] for r in seen), seen[:2]
    _same_losses(_rows(tmp_path / mode), _rows(folder))
    _same_weights(got["weights"], expected["weights"])


def test_lora_under_fsdp_trains_what_one_process_trains(tmp_path):
    lora = {"enabled": True, "r": 4}
    expected = _launch(tmp_path / "single", 1, 2, lora=lora)
    got = _launch(tmp_path / "fsdp", 2, 1, distributed="fsdp", lora=lora)
    _same_losses(_rows(tmp_path / "fsdp"), _rows(tmp_path / "single"))
    trained = {n: t for n, t in expected["weights"].items() if "lora_" in n}
    assert trained and got["sharded"]
    _same_weights(got["weights"], expected["weights"])


def test_a_sharded_checkpoint_resumes_in_one_process_and_a_full_one_under_fsdp(tmp_path, single):
    folder, expected = single
    reference = _rows(folder)
    # 2 FSDP ranks stop after step 2 (a crash after its checkpoint); 1 process resumes.
    sharded = tmp_path / "sharded"
    _launch(sharded, 2, 1, distributed="fsdp", ckpt_every=2, stop_after_step=2)
    ckpt = sharded / "run" / CHECKPOINT_DIR / "step-000002"
    marker = json.loads((ckpt / MARKER).read_text())
    shards = [n for n in marker["files"] if n.startswith("shards/")]
    assert len(shards) >= 3 and "model.safetensors" not in marker["files"]  # 2 ranks + metadata
    assert not list((sharded / "run" / CHECKPOINT_DIR).glob(".tmp-*"))
    got = _launch(sharded, 1, 2, resume=True)
    _same_losses(_rows(sharded), reference)
    _same_weights(got["weights"], expected["weights"])

    # 1 process stops after step 2; 2 FSDP ranks resume from its model.safetensors.
    full = tmp_path / "full"
    _launch(full, 1, 2, ckpt_every=2, stop_after_step=2)
    got = _launch(full, 2, 1, distributed="fsdp", resume=True, save_final=True)
    _same_losses(_rows(full), reference)
    _same_weights(got["weights"], expected["weights"])
    final = full / "run" / CHECKPOINT_DIR / "step-000004"
    assert (final / "shards").is_dir() and (final / "model.safetensors").is_file()
    # And back: 2 DDP ranks read that sharded checkpoint (nothing is left to train).
    back = _launch(full, 2, 1, distributed="ddp", resume=True)
    _same_weights(back["weights"], got["weights"])

    # A damaged shard fails its checksum: a resume sets the checkpoint aside.
    assert not (sharded / "run" / CHECKPOINT_DIR / "step-000004").exists()  # no ckpt_every
    victim = ckpt / shards[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert find_latest_checkpoint(sharded / "run") is None
    assert list((sharded / "run" / CHECKPOINT_DIR).glob("damaged-step-000002-*"))
