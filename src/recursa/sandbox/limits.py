"""Resource limits for sandbox workers, applied by the host before the worker runs any
model code (while it boots, and always before `start` returns).

- rlimits, set with `prlimit` on every process of the worker's tree (a wrapper's included),
  and inherited by all it starts later: address space (`memory_mib`), CPU seconds, file
  size, no core files, and, where the host does not run as root, the number of processes
  (the kernel does not apply RLIMIT_NPROC to root).
- a cgroup, where this process may create one (root with a writable cgroup tree): a
  `pids.max` that caps the processes and threads of the worker's whole tree, root included,
  and a memory limit on the tree (files in a tmpfs count). Best effort: without one, a fork
  bomb is bounded by RLIMIT_NPROC only, which root does not have.
- the host process made non-dumpable (`guard_host`), so that a worker of the same user
  cannot read its /proc/PID/environ, memory or descriptors. (A plain subprocess worker under
  root also drops every capability itself at start: see worker.py `_harden`.)
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass

from . import watchdog

MIB = 1024 * 1024
DEFAULT_MEMORY_FLOOR_MIB = 2048
"""The default memory limit is this, plus six times the context (text, its copies, chunks)."""
DEFAULT_MAX_PROCS = 256
"""Processes and threads in one worker's tree (pids cgroup, RLIMIT_NPROC for non-root)."""
DEFAULT_FILE_MIB = 1024
MIN_MEMORY_MIB = 64

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


def default_memory_mib(context_bytes: int) -> int:
    """The default memory limit for a worker holding contexts of `context_bytes`."""
    return DEFAULT_MEMORY_FLOOR_MIB + 6 * math.ceil(context_bytes / MIB)


def default_cpu_seconds(cell_timeout: float) -> int:
    """CPU seconds for the worker's whole life: generous, since it persists across blocks."""
    return int(max(3600.0, 60.0 * cell_timeout))


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    memory_mib: int
    cpu_seconds: int
    file_mib: int = DEFAULT_FILE_MIB
    max_procs: int = DEFAULT_MAX_PROCS


# ---- the child side (between fork and exec) ----------------------------------------------------


_LIBC: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return 40


def _user_tasks(uid: int) -> int:
    """Processes and threads that `uid` runs now: what RLIMIT_NPROC counts against."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            total += int(stat[stat.rfind(b")") + 2 :].split()[17])
        except (OSError, ValueError, IndexError):
            continue
    return total


def rlimit_values(limits: WorkerLimits | None) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for each rlimit a worker gets."""
    rlimits: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
    if limits is not None:
        memory = limits.memory_mib * MIB
        rlimits += [
            (resource.RLIMIT_AS, memory, memory),
            # SIGXCPU at the soft limit (the worker ends and is restarted), SIGKILL 5 s later.
            (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 5),
            (resource.RLIMIT_FSIZE, limits.file_mib * MIB, limits.file_mib * MIB),
        ]
        if os.geteuid() != 0:
            nproc = _user_tasks(os.geteuid()) + limits.max_procs
            rlimits.append((resource.RLIMIT_NPROC, nproc, nproc))
    return rlimits


def apply_to_running(
    pids: list[int], limits: WorkerLimits, cgroup_procs: tuple[str, ...] = (), join: int = 0
) -> None:
    """Put limits on processes already running (a wrapper and the worker it started, before
    the worker runs any model code): `prlimit` each, and move `join` (the worker: the one
    that will start processes; each move costs a few milliseconds) into the cgroup. Raises
    OSError when a process cannot be limited; the caller must not use that worker."""
    for path in cgroup_procs:
        _write(path, str(join))
    values = rlimit_values(limits)
    for pid in pids:
        for which, soft, hard in values:
            current_hard = resource.prlimit(pid, which)[1]
            if current_hard != resource.RLIM_INFINITY:  # never above a limit set from outside
                hard = min(hard, current_hard)
                soft = min(soft, hard)
            resource.prlimit(pid, which, (soft, hard))


def die_with_parent() -> Callable[[], None]:
    """A preexec function that only makes the child die with the host (for a wrapper such as
    the docker client). A preexec function makes Python fork instead of vfork: several
    milliseconds more per start, more for a large host, so the workers themselves go without."""
    lib = libc()

    def preexec() -> None:
        lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


_HOST_GUARDED = False


def guard_host() -> None:
    """Make this process non-dumpable: its /proc/PID/environ, mem and fd then need
    CAP_SYS_PTRACE, which a worker (same user, no capabilities) does not have. Once per
    process; it also means no core files of the host and no same-user debugger attach."""
    global _HOST_GUARDED
    if not _HOST_GUARDED:
        libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        _HOST_GUARDED = True


# ---- cgroups -------------------------------------------------------------------------------------

_COUNTER = itertools.count()
_CGROUPS_BROKEN: str | None = None
_SWEPT: set[str] = set()
PREFIX = "recursa-"


def _mounts() -> dict[str, str]:
    """Mount points of the cgroup hierarchies: 'pids', 'memory' (v1) and 'v2'."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/mounts") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        point, fstype, options = parts[1], parts[2], parts[3].split(",")
        if fstype == "cgroup2":
            found.setdefault("v2", point)
        elif fstype == "cgroup":
            for controller in ("pids", "memory"):
                if controller in options:
                    found.setdefault(controller, point)
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup path in each hierarchy: 'pids', 'memory' (v1), 'v2'."""
    paths: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return paths
    for line in lines:
        ident, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if ident == "0" and controllers == "":
            paths["v2"] = path
        for controller in controllers.split(","):
            if controller in ("pids", "memory"):
                paths[controller] = path
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cgroup:
    """The cgroup directories of one worker: joined before it runs model code, emptied and
    removed at close."""

    def __init__(self, dirs: list[str], kind: str) -> None:
        self.dirs = dirs
        self.kind = kind
        """'v1' or 'v2'."""

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    @classmethod
    def create(cls, max_procs: int, memory_bytes: int | None) -> Cgroup | None:
        """A new cgroup capping processes (and memory where that controller is there), or
        None where this process may not make one. A failure is remembered for the process."""
        global _CGROUPS_BROKEN
        if _CGROUPS_BROKEN is not None:
            return None
        mounts, own = _mounts(), _own_paths()
        name = f"{PREFIX}{os.getpid()}-{next(_COUNTER)}"
        made: list[str] = []
        try:
            if "pids" in mounts and "pids" in own:
                made.append(cls._make_v1(mounts, own, "pids", name, str(max_procs)))
                if memory_bytes and "memory" in mounts and "memory" in own:
                    with contextlib.suppress(OSError):
                        made.append(cls._make_v1(mounts, own, "memory", name, str(memory_bytes)))
                watchdog.watch(made)
                return cls(made, "v1")
            if "v2" in mounts and "v2" in own:
                parent = os.path.join(mounts["v2"], own["v2"].lstrip("/"))
                with open(os.path.join(parent, "cgroup.subtree_control")) as fh:
                    enabled = fh.read().split()
                if "pids" not in enabled:
                    raise OSError("the pids controller is not enabled for child cgroups")
                _sweep(parent)
                path = os.path.join(parent, name)
                os.mkdir(path)
                made.append(path)
                _write(os.path.join(path, "pids.max"), str(max_procs))
                if memory_bytes and "memory" in enabled:
                    _write(os.path.join(path, "memory.max"), str(memory_bytes))
                    with contextlib.suppress(OSError):
                        _write(os.path.join(path, "memory.swap.max"), "0")
                watchdog.watch(made)
                return cls(made, "v2")
            raise OSError("no pids cgroup controller is mounted")
        except OSError as exc:
            for path in made:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            _CGROUPS_BROKEN = f"{type(exc).__name__}: {exc}"
            return None

    @staticmethod
    def _make_v1(
        mounts: dict[str, str], own: dict[str, str], controller: str, name: str, limit: str
    ) -> str:
        parent = os.path.join(mounts[controller], own[controller].lstrip("/"))
        _sweep(parent)
        path = os.path.join(parent, name)
        os.mkdir(path)
        try:
            if controller == "pids":
                _write(os.path.join(path, "pids.max"), limit)
            else:
                _write(os.path.join(path, "memory.limit_in_bytes"), limit)
                with contextlib.suppress(OSError):
                    _write(os.path.join(path, "memory.memsw.limit_in_bytes"), limit)
        except OSError:
            os.rmdir(path)
            raise
        return path

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.procs_files:
            with contextlib.suppress(OSError, ValueError), open(path) as fh:
                found.update(int(line) for line in fh.read().split())
        return sorted(found)

    def kill_all(self) -> None:
        for _ in range(20):  # again, for processes forked while we were killing
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def try_remove(self) -> bool:
        """Remove the directories; False while a process (a dying one) is still in them."""
        left = []
        for path in self.dirs:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError:
                left.append(path)
        watchdog.unwatch([path for path in self.dirs if path not in left])
        self.dirs = left
        return not left


def _sweep(parent: str) -> None:
    """Remove the cgroups that earlier recursa processes, since gone, could not remove."""
    if parent in _SWEPT:
        return
    _SWEPT.add(parent)
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(PREFIX):
            continue
        owner = entry[len(PREFIX) :].split("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            stale = Cgroup([os.path.join(parent, entry)], "")
            stale.kill_all()
            stale.try_remove()


def cgroup_problem() -> str | None:
    """Why no cgroup caps the workers' processes here, or None when one does (probed once)."""
    group = Cgroup.create(8, None)
    if group is None:
        return _CGROUPS_BROKEN or "cgroups are not available"
    group.try_remove()
    return None


def process_cap_problem() -> str | None:
    """Why a fork bomb in a subprocess or bwrap worker is NOT bounded here, or None when it
    is (by a pids cgroup, or by RLIMIT_NPROC for a host that is not root)."""
    if os.geteuid() != 0:
        return None
    problem = cgroup_problem()
    if problem is None:
        return None
    return f"running as root, where RLIMIT_NPROC does not apply, and no cgroup ({problem})"
