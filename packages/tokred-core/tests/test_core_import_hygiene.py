"""tokred-core is a leaf: it must not pull in the heavy optional stacks."""

import subprocess
import sys

FORBIDDEN = ("transformers", "peft", "bitsandbytes", "triton")


def test_importing_tokred_core_loads_no_heavy_stack():
    code = (
        "import sys, tokred_core, tokred_core.cost, tokred_core.shapes, tokred_core.policies\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"tokred_core imported {out.stdout.strip()}"
