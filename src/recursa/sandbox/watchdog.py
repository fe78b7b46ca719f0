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
import subprocess
import threading

SHELL = "/bin/sh"
"""The watchdog is a POSIX shell script: a Python interpreter would hold ~10 MB per host
for a loop that only reads lines and, once, kills processes and removes directories."""
WATCH = r"""
set -f
nl='
'
dirs=''
while IFS= read -r line; do
    path=${line#?}
    case $line in
        +?*) dirs="$dirs$path$nl" ;;
        -?*)
            kept=''
            IFS=$nl
            for d in $dirs; do [ "$d" = "$path" ] || kept="$kept$d$nl"; done
            unset IFS
            dirs=$kept ;;
    esac
done
IFS=$nl
i=0
while [ $i -lt 20 ]; do
    left=''
    for d in $dirs; do
        [ -r "$d/cgroup.procs" ] || continue
        while IFS= read -r pid; do
            left=1
            kill -KILL "$pid"
        done < "$d/cgroup.procs"
    done
    [ -n "$left" ] || break
    sleep 0.05
    i=$((i + 1))
done
i=0
while [ $i -lt 50 ] && [ -n "$dirs" ]; do
    kept=''
    for d in $dirs; do
        rmdir "$d" || { [ -e "$d" ] && kept="$kept$d$nl"; }
    done
    dirs=$kept
    [ -n "$dirs" ] || break
    sleep 0.02
    i=$((i + 1))
done
"""

_LOCK = threading.Lock()
_FD: int | None = None
_OWNER = 0
"""The pid that started the watchdog: a forked child must not write to its parent's."""
_WATCHED: set[str] = set()
_STARTED: list[subprocess.Popen[bytes]] = []
"""Every watchdog this process started (a forked child starts its own), kept for good:
they outlive the host by design, never to be reported as leaked processes."""


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
    read, write = os.pipe()
    try:  # close_fds: the watchdog keeps no descriptor of the host's but its pipe
        proc = subprocess.Popen(
            [SHELL, "-c", WATCH],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            close_fds=True,
            start_new_session=True,
        )
    except OSError:
        os.close(write)
        return None
    finally:
        os.close(read)
    _STARTED.append(proc)
    _OWNER = os.getpid()
    return write
