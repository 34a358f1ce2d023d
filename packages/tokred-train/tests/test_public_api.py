"""Every name tokred_train exports lazily resolves, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import tokred_train


def test_every_exported_name_resolves():
    for name in tokred_train.__all__:
        assert getattr(tokred_train, name) is not None, name


def test_importing_the_package_does_not_import_transformers_or_peft():
    code = (
        "import sys, tokred_train; "
        "print(any(m in sys.modules for m in ('transformers', 'peft', 'tensorboard')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
