"""The YAML configs shipped in tokred/configs: find one by name, and the demo's recipe.

Light on purpose (no torch): `tokred --help` reads the demo recipe's step count.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from tokred_core import TokredError

__all__ = ["DEMO_RECIPE", "demo_recipe", "demo_steps", "resolve_config_path", "shipped_configs"]

#: The recipe `tokred demo` trains twice (and `tokred analyze --tiny` builds untrained).
DEMO_RECIPE = "demo"


def shipped_configs() -> dict[str, Path]:
    """Recipe name -> path of the YAML files shipped in tokred/configs."""
    folder = resources.files("tokred") / "configs"
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith((".yaml", ".yml")):
            out[entry.name.rsplit(".", 1)[0]] = Path(str(entry))
    return dict(sorted(out.items()))


def resolve_config_path(name: str) -> Path:
    """A file path as given, else a shipped recipe of that name (with or without .yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_configs()
    stem = path.name.rsplit(".", 1)[0] if path.suffix in (".yaml", ".yml") else path.name
    if str(path) == path.name and stem in shipped:
        return shipped[stem]
    raise TokredError(
        f"config file not found: {name} (shipped recipes: {', '.join(shipped) or 'none'})"
    )


def demo_recipe() -> dict[str, Any]:
    """The demo recipe as written (a fresh copy): what metrics.json records as its base."""
    import yaml

    return yaml.safe_load(shipped_configs()[DEMO_RECIPE].read_text(encoding="utf-8"))


def demo_steps() -> int:
    """Training steps of each demo run by default: the recipe's optim.max_steps."""
    return int(demo_recipe()["optim"]["max_steps"])
