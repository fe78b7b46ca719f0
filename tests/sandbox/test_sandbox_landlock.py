"""The landlock backend and what `--sandbox auto` does without bubblewrap.

Runs real confined workers (Landlock and seccomp on this machine's kernel) and the real CLI
with a PATH that holds no bwrap, so `auto` meets the machine that `pip install recursa`
usually lands on. Where neither bwrap nor Landlock works, `auto` must refuse in one line;
that case is made here by replacing the two checks `resolve_backend` consults.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import recursa.sandbox
from e2e_helpers import host_env, one_json_object, repl, run_cli, worker_processes
from recursa import RLM
from recursa.cli import dispatch
from recursa.errors import ConfigError, SandboxError
from recursa.sandbox import ContextPayload, LandlockSandbox, landlock_problem, resolve_backend
from recursa.sandbox.inside.confine import ARCHES, protections, seccomp_program
from recursa.sandbox.landlock import landlock_abi
from recursa.testing import ScriptedLM
from test_hostile_code import loopback_server  # noqa: F401 (a fixture)

SECRET = "sk-landlock-0123456789abcdef"

needs_landlock = pytest.mark.skipif(
    landlock_problem() is not None, reason=f"Landlock cannot confine here: {landlock_problem()}"
)


def no_bwrap_env(**extra: str) -> dict[str, str]:
    """The host's environment with a PATH of the venv's scripts only: no bwrap on it."""
    return host_env(PATH=str(Path(sys.executable).parent), **extra)


async def _no_calls(fn: str, args: dict[str, Any]) -> Any:
    raise ValueError("no calls expected")


def in_landlock(code: str, sandbox: LandlockSandbox | None = None) -> tuple[str, dict[str, Any]]:
    """Run one block in a fresh confined worker: (its stdout, what it reported it applied)."""

    async def go() -> tuple[str, dict[str, Any]]:
        box = sandbox or LandlockSandbox(cell_timeout=20)
        await box.start(ContextPayload())
        try:
            result = await box.execute(textwrap.dedent(code), _no_calls)
            assert result.error is None, result.error
            return result.stdout, box.confinement
        finally:
            await box.close()

    return asyncio.run(go())


@needs_landlock
def test_without_bwrap_auto_confines_hostile_code_and_nothing_leaks(
    serve,
    tmp_path: Path,
    loopback_server: tuple[int, list[bytes]],  # noqa: F811
) -> None:
    port, received = loopback_server
    host_file, beside = tmp_path / "host-secret.txt", tmp_path / "written-beside.txt"
    host_file.write_text(SECRET)
    code = f"""
        import os, socket
        def attempt(action):
            try:
                action()
                return 'done'
            except OSError as exc:
                return 'refused: ' + type(exc).__name__
        FINAL({{
            'read': attempt(lambda: open({str(host_file)!r}).read()),
            'write': attempt(lambda: open({str(beside)!r}, 'w').write('pwned')),
            'connect': attempt(lambda: socket.create_connection(('127.0.0.1', {port}), 2)),
            'environ': attempt(lambda: open(f'/proc/{{os.getppid()}}/environ', 'rb').read()),
        }})
        """
    server = serve(ScriptedLM(root=[repl(code)]))

    cli = run_cli(
        ["run", "q", "--model", "openai/x", "--base-url", server.url, "--json"],
        env=no_bwrap_env(OPENAI_API_KEY=SECRET),
    )

    assert cli.rc == 0, cli.err
    answer = one_json_object(cli.out)["answer"]
    assert all(v.startswith("refused") for v in answer.values()), answer
    assert SECRET not in cli.out
    assert not beside.exists()
    assert received == []
    assert f"sandbox: landlock (Landlock ABI {landlock_abi()}:" in cli.err


@pytest.fixture
def nothing_isolates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with neither a working bwrap nor Landlock, as `resolve_backend` sees it."""
    monkeypatch.setattr(recursa.sandbox, "bwrap_problem", lambda: "bwrap is not installed")
    monkeypatch.setattr(recursa.sandbox, "landlock_problem", lambda: "the kernel has no Landlock")


@pytest.mark.usefixtures("nothing_isolates")
def test_auto_refuses_in_one_line_when_nothing_isolates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    base = ["run", "q", "--model", "openai/x", "--base-url", "http://127.0.0.1:9/v1"]

    code = dispatch(base)

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "apt-get install bubblewrap" in err and "--sandbox subprocess" in err
    with pytest.raises(ConfigError, match="apt-get install bubblewrap"):
        RLM("openai/x", base_url="http://127.0.0.1:9/v1", sandbox="auto")
    assert resolve_backend("subprocess") == "subprocess"  # accepting the risk still works


@pytest.mark.usefixtures("nothing_isolates")
def test_the_scripted_demo_runs_unisolated_when_nothing_isolates_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = dispatch(["demo", "--size-mb", "0.05", "--quiet", "--json", "--no-store"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "runs its own code unisolated" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["status"] == "ok"


@needs_landlock
def test_the_worker_reports_what_it_confined_and_it_holds_for_its_children() -> None:
    code = """
        import ctypes, os, socket, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        def errno_of(result):
            return 0 if result == 0 else ctypes.get_errno()
        for name, result in [
            ('unshare', errno_of(libc.unshare(0x10000000))),  # CLONE_NEWUSER
            ('ptrace', errno_of(libc.ptrace(0, 0, None, None))),  # PTRACE_TRACEME
            ('mount', errno_of(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))),
            ('chroot', errno_of(libc.chroot(b'/'))),
        ]:
            print(name, os.strerror(result) if result else 'allowed')
        for make in (socket.socketpair, lambda: socket.socket(socket.AF_UNIX)):
            try:
                make()
                print('socket allowed')
            except OSError as exc:
                print('socket', type(exc).__name__)
        child = subprocess.run(['cat', '/etc/hostname'], capture_output=True, text=True)
        print('child', child.returncode, child.stderr.strip().split(':')[-1].strip())
        """
    out, confined = in_landlock(code)

    assert confined == {"abi": landlock_abi(), "protections": protections(landlock_abi())}
    assert "unshare Operation not permitted" in out
    assert "ptrace Operation not permitted" in out
    assert "mount Operation not permitted" in out
    assert "chroot Operation not permitted" in out
    assert out.count("socket PermissionError") == 2
    assert "child 1 Permission denied" in out  # a program it starts is confined too


@needs_landlock
def test_a_worker_that_does_not_confine_itself_is_refused() -> None:
    class Unconfined(LandlockSandbox):
        def init_options(self) -> dict[str, Any]:
            options = super().init_options()
            del options["confine"]
            return options

    sandbox = Unconfined(cell_timeout=20)
    with pytest.raises(SandboxError, match="did not confine itself"):
        in_landlock("print(1)", sandbox)

    assert sandbox.proc is None  # the refused worker was ended, not left running
    assert [pid for pid, ppid in worker_processes().items() if ppid == os.getpid()] == []


@needs_landlock
def test_doctor_says_what_works_and_never_prints_a_key() -> None:
    env = no_bwrap_env(OPENAI_API_KEY=SECRET)

    as_json = run_cli(["doctor", "--json"], env=env)
    text = run_cli(["doctor"], env=env)

    assert as_json.rc == 0, as_json.err
    report = json.loads(as_json.out)
    assert report["backends"]["bwrap"]["works"] is False
    assert "apt-get install bubblewrap" in report["backends"]["bwrap"]["why_not"]
    assert report["backends"]["landlock"]["works"] is True
    assert report["backends"]["landlock"]["protections"] == protections(landlock_abi())
    assert report["auto"] == {"picks": "landlock", "refuses": None}
    assert report["landlock_abi"] == landlock_abi()
    assert report["provider_keys"]["openai"] is True
    assert report["provider_keys"]["anthropic"] is False
    assert text.rc == 0, text.err
    assert f"Landlock ABI: {landlock_abi()}" in text.out
    assert "--sandbox auto: landlock" in text.out
    assert "provider keys set: openai" in text.out
    assert SECRET not in as_json.out + text.out + as_json.err + text.err


def run_bpf(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """Classic BPF, the few instructions `seccomp_program` uses, over one seccomp_data."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    ops = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = ops[pc]
        if code == 0x20:  # ld word at k
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:  # ret
            return k
        else:
            taken = {0x15: acc == k, 0x45: bool(acc & k), 0x35: acc >= k}[code]
            pc += jt if taken else jf
        pc += 1


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_seccomp_program_refuses_what_it_says_on_both_machines(machine: str) -> None:
    arch, numbers = ARCHES[machine]
    denied = [n for name, n in numbers.items() if name not in ("clone", "clone3", "truncate")]
    program = seccomp_program(arch, denied, numbers["clone"], numbers["clone3"])
    eperm, enosys, allow, kill = 0x50001, 0x50026, 0x7FFF0000, 0x80000000
    read = {"x86_64": 0, "aarch64": 63}[machine]

    for name in ("socket", "socketpair", "ptrace", "unshare", "mount", "setns", "io_uring_setup"):
        assert run_bpf(program, arch, numbers[name]) == eperm, name
    assert run_bpf(program, arch, numbers["clone3"]) == enosys
    assert run_bpf(program, arch, numbers["clone"], 0x10000000 | 17) == eperm  # CLONE_NEWUSER
    assert run_bpf(program, arch, numbers["clone"], 0x003D0F00 | 17) == allow  # a thread
    assert run_bpf(program, arch, read) == allow
    assert run_bpf(program, arch, numbers["truncate"]) == allow  # Landlock ABI 3+ guards it
    assert run_bpf(program, 0x40000003, read) == kill  # another architecture's numbers
    if machine == "x86_64":
        assert run_bpf(program, arch, 0x40000000 | 41) == eperm  # x32 socket
