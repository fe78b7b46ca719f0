"""The landlock backend: the subprocess worker, confined by the kernel with no helper binary.

Started like the subprocess backend (clean environment, private temporary folder, resource
limits, cgroup where one can be made, non-dumpable host), the worker then confines itself
while it handles `init`, before any model code runs (`inside/confine.py`, standard library only):
Landlock lets it read only the system and Python folders bubblewrap would bind, its contexts
and its own /proc entry, and write only its temporary folder; a seccomp filter refuses every
new socket, ptrace, mounts and namespaces. It reports what it applied in its `ready` frame.
"""

from __future__ import annotations

import functools
from typing import Any

from .bwrap import SYSTEM_DIRS, SYSTEM_FILES, python_dirs
from .process import SubprocessSandbox

DEVICES_READ = ("/dev/urandom", "/dev/random", "/dev/zero")
DEVICES_WRITE = ("/dev/null",)


@functools.cache
def landlock_problem() -> str | None:
    """Why the landlock backend cannot confine a worker here, or None when it can."""
    try:
        from .inside import confine
    except OSError as exc:  # no C library to call
        return f"no system calls from Python here: {exc}"
    return confine.problem()


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    from .inside import confine

    return confine.abi()


def landlock_summary() -> str:
    """What a landlock worker is confined by on this kernel, in one line."""
    from .inside import confine

    version = confine.abi()
    return f"Landlock ABI {version}: " + ", ".join(confine.protections(version))


class LandlockSandbox(SubprocessSandbox):
    name = "landlock"
    binds_paths = True  # the rules are fixed once the worker confines itself

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.confinement: dict[str, Any] = {}
        """What the running worker reported it applied: abi, protections."""

    def init_options(self) -> dict[str, Any]:
        assert self.workdir is not None
        reads = [*SYSTEM_DIRS, *SYSTEM_FILES, *python_dirs(self.python), *DEVICES_READ]
        return {
            **super().init_options(),
            "confine": {
                "read": [*reads, "/proc/self", *self.bound],  # bound: the contexts' host paths
                "write": [self.workdir, *DEVICES_WRITE],
            },
        }

    def on_ready(self, reply: dict[str, Any]) -> None:
        """The worker must report exactly the protections this kernel allows: the progress
        line and `recursa doctor` say what they are before any worker starts."""
        from .inside import confine

        confined = reply.get("confined")
        expected = confine.protections(confine.abi())
        if not isinstance(confined, dict) or confined.get("protections") != expected:
            raise OSError(f"the worker did not confine itself as expected: {confined!r}")
        self.confinement = confined
