"""Test sessions: one per package, each in an environment holding only that package's
declared dependencies (so a missing declaration fails here, not on a user's machine),
plus cross-package integration tests and lint. Run all with `uvx nox`."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PACKAGES = {
    "core": ("tokred-core", "packages/tokred-core"),
    "kernels": ("tokred-kernels", "packages/tokred-kernels"),
    "models": ("tokred-models", "packages/tokred-models"),
    "train": ("tokred-train", "packages/tokred-train"),
    "app": ("tokred", "apps/tokred"),
}


def _sync(session: nox.Session, *args: str) -> None:
    # --exact removes anything the lock does not give this package: the point of the session.
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--exact",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


def _pytest(session: nox.Session, path: str) -> None:
    # Tiny test models gain nothing from a second thread, and on a shared 2-core machine
    # intra-op threads waiting on a busy core make them many times slower.
    session.run(
        "python",
        "-m",
        "pytest",
        path,
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


@nox.session(name="tests", python="3.11")
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package's own tests in an environment with only its dependencies."""
    dist, path = PACKAGES[package]
    _sync(session, "--package", dist, "--group", "test")
    _pytest(session, f"{path}/tests")


@nox.session(python="3.11")
def integration(session: nox.Session) -> None:
    """Cross-package tests on the whole workspace."""
    _sync(session, "--all-packages", "--group", "dev")
    _pytest(session, "tests")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
