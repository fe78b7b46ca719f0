"""The bubblewrap backend: the same worker inside Linux namespaces.

No network (a new, empty network namespace), its own pid namespace, all capabilities
dropped, no nested user namespaces (where bubblewrap can forbid them), read-only binds of
the system and of the Python that runs the worker, a private tmpfs as /tmp and HOME (its
size capped at the memory limit), and it dies with its parent. The subprocess backend's
rlimits and cgroup apply too, to bwrap's whole tree, before any model code runs. Only what
the worker needs is bound: the host's home, project files and secrets are simply not there.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import limits
from .base import ContextPayload
from .process import WORKER_PATH, SubprocessSandbox

SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/alternatives")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")


def python_dirs(python: str) -> list[str]:
    """The directories a Python needs: its install prefix, the venv, the worker's folder."""
    dirs = {sys.base_prefix, sys.prefix, str(WORKER_PATH.parent)}
    real = Path(python).resolve()
    dirs.add(str(real.parent.parent))
    return sorted(d for d in dirs if os.path.isdir(d))


@functools.cache
def _bwrap_help() -> str:
    try:
        done = subprocess.run(
            [shutil.which("bwrap") or "bwrap", "--help"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")


@functools.cache
def _userns_flags() -> tuple[str, ...]:
    """No nested user namespaces (so no new mounts or capabilities inside), where this
    bubblewrap can do that here (0.8 and later, user namespaces allowed)."""
    if "--disable-userns" not in _bwrap_help():
        return ()
    flags = ("--unshare-user", "--disable-userns")
    true = shutil.which("true") or "/bin/true"
    probe = [shutil.which("bwrap") or "bwrap", *flags, "--ro-bind", "/", "/", true]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return flags if done.returncode == 0 else ()


def bwrap_argv(
    python: str, extra_ro: list[str] | None = None, tmpfs_bytes: int | None = None
) -> list[str]:
    """The command that runs the worker in bubblewrap. `tmpfs_bytes` caps the private /tmp
    (a tmpfs lives in memory) where this bubblewrap knows `--size`."""
    argv = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        *_userns_flags(),
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "LC_ALL", "C.UTF-8",
        "--setenv", "HOME", "/tmp",
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]  # fmt: skip
    # The private /tmp first: binds that follow may then live under it (a venv in /tmp).
    if tmpfs_bytes and "--size" in _bwrap_help():
        argv += ["--size", str(tmpfs_bytes)]
    argv += ["--tmpfs", "/tmp"]
    for path in SYSTEM_DIRS:
        argv += ["--ro-bind-try", path, path]
    for path in SYSTEM_FILES:
        argv += ["--ro-bind-try", path, path]
    for path in [*python_dirs(python), *(extra_ro or [])]:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp"]
    return [*argv, python, "-I", "-S", "-X", "utf8", str(WORKER_PATH)]


@functools.cache
def bwrap_problem(python: str | None = None) -> str | None:
    """Why bwrap cannot run the worker here, or None when it can (checked once)."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    argv = bwrap_argv(python or sys.executable)
    argv[-3:] = ["-I", "-c", f"import os; assert os.path.isfile({str(WORKER_PATH)!r})"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to start: {exc}"
    if done.returncode != 0:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return f"bwrap cannot create its namespaces here: {last[0][:200]}"
    return None


class BwrapSandbox(SubprocessSandbox):
    name = "bwrap"
    drop_caps = False  # bwrap drops them all itself
    binds_paths = True

    def init_options(self) -> dict[str, Any]:
        return {}  # --die-with-parent and the pid namespace's init cover the tree

    def command(self, payload: ContextPayload) -> list[str]:
        dirs = payload.host_paths()  # directory roots and mapped files, bound read-only
        memory = self.limits.memory_mib * limits.MIB if self.limits else None
        return bwrap_argv(self.python, dirs, memory)
