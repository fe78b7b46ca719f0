"""The watchdog a host starts with its first cgroup: when the host dies without cleaning up
(SIGKILL), it kills what is left in the cgroups it was told of and removes them. Driven here
through a real host process that is SIGKILLed, with plain directories standing in for
cgroups (a `cgroup.procs` file naming a process), so it runs where no cgroup can be made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HOST = textwrap.dedent(
    """
    import sys, time
    from recursa.sandbox import watchdog
    live, empty, dropped = sys.argv[1:4]
    watchdog.watch([live, empty, dropped])
    watchdog.unwatch([dropped])
    print('ready', flush=True)
    time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _wait_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_a_sigkilled_hosts_watchdog_kills_what_is_left_and_removes_the_dirs(tmp_path) -> None:
    live, empty, dropped = (tmp_path / name for name in ("live", "empty", "dropped"))
    for path in (live, empty, dropped):
        path.mkdir()
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (live / "cgroup.procs").write_text(f"{orphan.pid}\n")
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(live), str(empty), str(dropped)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        assert host.stdout.readline() == "ready\n"
        (dog,) = _children(host.pid)
        assert _alive(dog) and _alive(orphan.pid)
        peak_kb = _peak_kb(dog)
        os.kill(host.pid, signal.SIGKILL)
        host.wait()

        assert orphan.wait(timeout=10) == -signal.SIGKILL  # killed by the watchdog
        assert _wait_gone(dog)
    finally:
        for proc in (host, orphan):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not empty.exists()  # removed
    assert dropped.exists()  # unwatched before the host died: left alone
    assert live.exists()  # a real directory with a file in it (a cgroup would be gone)
    assert peak_kb < 4096  # a small process: no interpreter of its own
