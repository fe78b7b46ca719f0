"""A watchdog that empties the workers' cgroups when the host dies without doing it itself.

A host killed by SIGKILL runs no cleanup. Its workers die with it (PR_SET_PDEATHSIG), but a
process model code started in a session of its own (`setsid`) is reparented and would live
on. Every such process is still in its worker's cgroup, so one small process per host, in a
session of its own and holding only the read end of a pipe, keeps the list of live cgroups;
when the pipe reaches end of file (the host is gone, however it ended) it kills whatever is
left in them and removes them. It starts with the first cgroup; where no cgroup can be made
there is nothing for it to do (docs/SANDBOX.md says what can then outlive the host).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

WATCH = r"""
import os, signal, sys
os.closerange(3, os.sysconf('SC_OPEN_MAX'))  # whatever the host could not mark uninherited
dirs = set()
for line in sys.stdin:
    path = line.rstrip('\n')
    if path[:1] == '+':
        dirs.add(path[1:])
    elif path[:1] == '-':
        dirs.discard(path[1:])
for _ in range(20):
    left = False
    for path in dirs:
        try:
            with open(os.path.join(path, 'cgroup.procs')) as fh:
                pids = [int(p) for p in fh.read().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            left = True
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if not left:
        break
    signal.sigtimedwait([], 0.05)
for _ in range(50):
    for path in list(dirs):
        try:
            os.rmdir(path)
            dirs.discard(path)
        except FileNotFoundError:
            dirs.discard(path)
        except OSError:
            pass
    if not dirs:
        break
    signal.sigtimedwait([], 0.02)
"""

_LOCK = threading.Lock()
_FD: int | None = None
_OWNER = 0
"""The pid that started the watchdog: a forked child must not write to its parent's."""
_WATCHED: set[str] = set()


def watch(dirs: list[str]) -> None:
    """Have the watchdog empty and remove `dirs` if this process dies before `unwatch`."""
    with _LOCK:
        _WATCHED.update(dirs)
        _tell("".join(f"+{path}\n" for path in dirs))


def unwatch(dirs: list[str]) -> None:
    """`dirs` were removed: nothing to do for them any more."""
    with _LOCK:
        gone = [path for path in dirs if path in _WATCHED]
        _WATCHED.difference_update(gone)
        if gone:
            _tell("".join(f"-{path}\n" for path in gone))


def _tell(lines: str) -> None:
    """(Under _LOCK.) Write to the watchdog, starting one (told every dir) where needed."""
    global _FD
    if _FD is not None and os.getpid() == _OWNER:
        with contextlib.suppress(OSError):
            os.write(_FD, lines.encode())
            return
        os.close(_FD)
    _FD = _start()
    if _FD is not None:
        with contextlib.suppress(OSError):
            os.write(_FD, "".join(f"+{path}\n" for path in _WATCHED).encode())


def _start() -> int | None:
    """A new watchdog; the write end of its pipe (never inherited), or None if it failed."""
    global _OWNER
    if not sys.executable:  # an embedded interpreter: nothing to start the watchdog with
        return None
    read, write = os.pipe()
    try:
        os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", "-c", WATCH],
            {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
    except OSError:
        os.close(write)
        return None
    finally:
        os.close(read)
    _OWNER = os.getpid()
    return write
