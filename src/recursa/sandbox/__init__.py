"""Sandbox backends behind one protocol; `make_sandbox` picks one by name."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import BlockResult, CallHandler, ContextPayload, Sandbox
from .bwrap import BwrapSandbox, bwrap_problem
from .docker import DockerSandbox, docker_problem
from .landlock import LandlockSandbox, landlock_problem
from .limits import process_cap_problem
from .process import SubprocessSandbox

BACKENDS = ("auto", "subprocess", "bwrap", "landlock", "local", "docker")

NO_ISOLATION = (
    "no sandbox isolates model code here: install bubblewrap (apt-get install bubblewrap) "
    "or run on Linux 5.13+ with Landlock, or accept that model code can read and write your "
    "files and reach the network with --sandbox subprocess"
)


def resolve_backend(kind: str = "auto") -> str:
    """The backend `kind` names here: `auto` is bwrap where it works, else landlock, else a
    ConfigError that says what to install (never an unisolated backend picked silently).
    Raises ConfigError for a backend that cannot run on this machine."""
    if kind not in BACKENDS:
        raise ConfigError(f"unknown sandbox {kind!r}: choose one of {', '.join(BACKENDS)}")
    if kind == "auto":
        if bwrap_problem() is None:
            return "bwrap"
        if landlock_problem() is None:
            return "landlock"
        raise ConfigError(NO_ISOLATION)
    checks = {"bwrap": bwrap_problem, "landlock": landlock_problem, "docker": docker_problem}
    if kind in checks and (problem := checks[kind]()):
        raise ConfigError(f"--sandbox {kind}: {problem}")
    return kind


def make_sandbox(kind: str, **options: Any) -> Sandbox:
    """A new, not yet started sandbox of a backend that `resolve_backend` returned.
    `options`: cell_timeout, max_output, memory_limit (MiB, None for the default),
    max_procs, and per backend: image (docker)."""
    if kind != "docker":
        options.pop("image", None)
    if kind == "local":
        from .local import LocalSandbox  # imports the worker's module into this process

        return LocalSandbox(**options)
    if kind == "bwrap":
        return BwrapSandbox(**options)
    if kind == "docker":
        return DockerSandbox(**options)
    if kind == "landlock":
        return LandlockSandbox(**options)
    return SubprocessSandbox(**options)


__all__ = [
    "BACKENDS",
    "NO_ISOLATION",
    "BlockResult",
    "BwrapSandbox",
    "CallHandler",
    "ContextPayload",
    "DockerSandbox",
    "LandlockSandbox",
    "Sandbox",
    "SubprocessSandbox",
    "bwrap_problem",
    "docker_problem",
    "landlock_problem",
    "make_sandbox",
    "process_cap_problem",
    "resolve_backend",
]
