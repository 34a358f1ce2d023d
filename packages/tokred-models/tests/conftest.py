"""Shared set-up of the tokred-models tests (tiny builders live in tokred_models.testing).

The models here are tiny (hidden size 32): one intra-op thread is faster than two, and on
a busy 2-core machine OpenMP threads spinning against another process made single
forwards 50x slower. Results do not depend on the thread count.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
