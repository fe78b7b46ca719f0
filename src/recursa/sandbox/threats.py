"""What each sandbox backend blocks, and what it does not: the table in docs/SANDBOX.md.

One row per attack. Each cell is a verdict (`blocked`, `bounded`, `contained`, `partly`,
`not blocked`, `n/a`) and how. The hostile-code tests (tests/sandbox/test_hostile_code.py) check the
verdicts they can check, attack by attack, and a test keeps docs/SANDBOX.md equal to
`markdown_table()`.
"""

from __future__ import annotations

BACKEND_ORDER = ("subprocess", "bwrap", "landlock", "docker", "local")

BLOCKED, BOUNDED, CONTAINED, PARTLY, NOT_BLOCKED, NA = (
    "blocked",
    "bounded",
    "contained",
    "partly",
    "not blocked",
    "n/a",
)

Cell = tuple[str, str]

_CLEAN_ENV = "the environment is built from nothing (PATH, LANG, a temporary HOME)"
_SAME_AS_SUBPROCESS = "as subprocess (the limits hold for bwrap's whole tree)"
_AS_SUBPROCESS = "as subprocess"

ATTACKS: dict[str, tuple[str, dict[str, Cell]]] = {
    "env_key": (
        "Read an API key from the environment",
        {
            "subprocess": (BLOCKED, _CLEAN_ENV),
            "bwrap": (BLOCKED, _CLEAN_ENV + " (`--clearenv`)"),
            "landlock": (BLOCKED, _CLEAN_ENV),
            "docker": (BLOCKED, _CLEAN_ENV + " (`-e`)"),
            "local": (NOT_BLOCKED, "it is the host's own `os.environ`"),
        },
    ),
    "proc_environ": (
        "Read `/proc/1/environ` or the parent's environ",
        {
            "subprocess": (
                PARTLY,
                "the parent's is refused (the host makes itself non-dumpable and, under "
                "root, the worker has no capabilities); pid 1 and other processes of the "
                "same user are readable (same pid namespace)",
            ),
            "bwrap": (
                BLOCKED,
                "own pid namespace: pid 1 and the parent are the sandbox's own bwrap, with "
                "the clean environment",
            ),
            "landlock": (
                BLOCKED,
                "Landlock opens only the worker's own /proc entry: pid 1's, the parent's and "
                "other processes' are refused (and Landlock refuses ptrace-style access to "
                "processes outside the sandbox)",
            ),
            "docker": (BLOCKED, "own pid namespace: the worker is pid 1"),
            "local": (NOT_BLOCKED, "the code runs in the host process"),
        },
    ),
    "file_read": (
        "Read a host file outside the sandbox",
        {
            "subprocess": (
                NOT_BLOCKED,
                "anything the host's user can read (under root without capabilities: "
                "whatever root owns or anyone may read)",
            ),
            "bwrap": (
                BLOCKED,
                "only /usr, /bin, /lib*, /sbin, the Python install and directory contexts "
                "are there, read-only",
            ),
            "landlock": (
                BLOCKED,
                "Landlock lets it read only /usr, /bin, /lib*, /sbin, /etc/ld.so.cache, "
                "/etc/localtime, the Python install and venv and the contexts; NOT blocked: "
                "whether a path exists, its size and times (`stat` is not guarded)",
            ),
            "docker": (BLOCKED, "only the image, the worker and directory contexts"),
            "local": (NOT_BLOCKED, "anything the host can read"),
        },
    ),
    "file_write": (
        "Write a host file outside the sandbox",
        {
            "subprocess": (
                NOT_BLOCKED,
                "anything the host's user can write; one file at most 1 GiB (RLIMIT_FSIZE)",
            ),
            "bwrap": (
                BLOCKED,
                "every bind is read-only; /tmp is a private tmpfs, gone with the sandbox",
            ),
            "landlock": (
                BLOCKED,
                "Landlock lets it write only beneath its private temporary folder (removed "
                "at the end) and /dev/null; truncation is guarded too",
            ),
            "docker": (BLOCKED, "read-only root; /tmp is a private tmpfs"),
            "local": (NOT_BLOCKED, "anything the host can write"),
        },
    ),
    "network": (
        "Connect to a loopback server or the internet",
        {
            "subprocess": (
                NOT_BLOCKED,
                "the host's network: a local model server, or any other, is reachable "
                "(sub-queries sent that way bypass the budget)",
            ),
            "bwrap": (BLOCKED, "an empty network namespace: no interface is up"),
            "landlock": (
                BLOCKED,
                "seccomp refuses every new socket (TCP, UDP, unix, netlink) and io_uring; "
                "Landlock ABI 4+ also denies TCP bind and connect",
            ),
            "docker": (BLOCKED, "`--network none`"),
            "local": (NOT_BLOCKED, "the host's network"),
        },
    ),
    "subprocess": (
        "Start a subprocess",
        {
            "subprocess": (
                CONTAINED,
                "allowed; it inherits the clean environment and the limits, and is killed "
                "with the worker (process group, subreaper, cgroup); if the host is "
                "SIGKILLed, a watchdog empties the cgroup; without a cgroup, a process in a "
                "session of its own outlives a SIGKILLed host",
            ),
            "bwrap": (CONTAINED, "allowed, inside the same namespaces; killed with them"),
            "landlock": (
                CONTAINED,
                "allowed (programs of the read-only system folders); each inherits the "
                "confinement, the clean environment and the limits, and dies with the worker",
            ),
            "docker": (CONTAINED, "allowed, inside the container; removed with it"),
            "local": (
                NOT_BLOCKED,
                "a child of the host, with the host's environment; not killed at the end",
            ),
        },
    ),
    "fork_bomb": (
        "Fork bomb",
        {
            "subprocess": (
                BOUNDED,
                "at 256 processes and threads by a pids cgroup where the host can make one "
                "(root with a writable cgroup tree), else by RLIMIT_NPROC when not root; "
                "NOT bounded under root without a writable cgroup (the kernel exempts root "
                "from RLIMIT_NPROC)",
            ),
            "bwrap": (BOUNDED, _SAME_AS_SUBPROCESS),
            "landlock": (BOUNDED, _AS_SUBPROCESS),
            "docker": (BOUNDED, "`--pids-limit 256`"),
            "local": (NOT_BLOCKED, "it forks the host"),
        },
    ),
    "memory_bomb": (
        "Memory bomb",
        {
            "subprocess": (
                BLOCKED,
                "`MemoryError` at `--memory-limit` (RLIMIT_AS on each process; a cgroup "
                "memory limit on the whole tree where one can be made); the REPL goes on",
            ),
            "bwrap": (BLOCKED, _SAME_AS_SUBPROCESS + "; /tmp is capped at the same size"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (
                BLOCKED,
                "`MemoryError` (the worker sets RLIMIT_AS on itself); `--memory` for the container",
            ),
            "local": (NOT_BLOCKED, "the host's memory"),
        },
    ),
    "endless_loop": (
        "Endless loop",
        {
            "subprocess": (
                BLOCKED,
                "interrupted at `--cell-timeout`, variables kept; a block that ignores the "
                "interrupt is killed with its worker 2 s later (variables lost, the model "
                "is told)",
            ),
            "bwrap": (BLOCKED, "as subprocess"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (BLOCKED, "as subprocess"),
            "local": (
                PARTLY,
                "interrupted at `--cell-timeout` in pure Python, variables kept; a block "
                "that ignores it, or waits in C, keeps running in a thread of the host",
            ),
        },
    ),
    "huge_print": (
        "Huge print",
        {
            "subprocess": (
                BLOCKED,
                "cut to `--max-output-chars` (head and tail, true length shown); the worker "
                "keeps at most twice that; raw writes to fd 1 and 2 go to a pipe the host "
                "drains, keeping 4 KB",
            ),
            "bwrap": (BLOCKED, "as subprocess"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (BLOCKED, "as subprocess"),
            "local": (BLOCKED, "cut the same way (raw fd writes reach the host's streams)"),
        },
    ),
    "recursion": (
        "Recursion bomb",
        {
            "subprocess": (
                BLOCKED,
                "`RecursionError`; a C stack overflow (recursion limit raised) kills only "
                "the worker, which is restarted (the model is told)",
            ),
            "bwrap": (BLOCKED, "as subprocess"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (BLOCKED, "as subprocess"),
            "local": (PARTLY, "`RecursionError`; a C stack overflow kills the host"),
        },
    ),
    "exit": (
        "`sys.exit` and `os._exit`",
        {
            "subprocess": (
                BLOCKED,
                "`SystemExit` is caught; `os._exit` ends only the worker, which is "
                "restarted (the model is told)",
            ),
            "bwrap": (BLOCKED, "as subprocess"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (BLOCKED, "as subprocess"),
            "local": (PARTLY, "`SystemExit` is caught; `os._exit` ends the host"),
        },
    ),
    "reassign": (
        "Reassign `llm_query`, `context`, `FINAL`",
        {
            "subprocess": (
                BLOCKED,
                "every built-in name and `context` is restored after every block, with "
                "the code, defaults and closed-over values of the built-in functions",
            ),
            "bwrap": (BLOCKED, "as subprocess"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (BLOCKED, "as subprocess"),
            "local": (BLOCKED, "as subprocess"),
        },
    ),
    "builtins": (
        "Patch `builtins`",
        {
            "subprocess": (
                BLOCKED,
                "the worker's own code uses a private copy; the module is put back after "
                "every block and at every host call",
            ),
            "bwrap": (BLOCKED, "as subprocess"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (BLOCKED, "as subprocess"),
            "local": (
                NOT_BLOCKED,
                "they are the host's: put back after the block, but every thread of the "
                "host sees the patch meanwhile",
            ),
        },
    ),
    "channel": (
        "Close the channel, or flood it with junk",
        {
            "subprocess": (
                BLOCKED,
                "a malformed frame, a header over 512 MiB, a result of the wrong shape, "
                "over 100,000 frames in one block or a closed channel ends that worker: it "
                "is restarted, the model is told, the host goes on; forged results are cut "
                "to the output caps on the host's side (docs/SECURITY.md)",
            ),
            "bwrap": (BLOCKED, "as subprocess"),
            "landlock": (BLOCKED, _AS_SUBPROCESS),
            "docker": (BLOCKED, "as subprocess"),
            "local": (NA, "no channel: model code can close any descriptor of the host"),
        },
    ),
    "signal_host": (
        "Signal or kill the host process",
        {
            "subprocess": (NOT_BLOCKED, "same user: `os.kill(os.getppid(), 9)` works"),
            "bwrap": (BLOCKED, "the host is outside the sandbox's pid namespace"),
            "landlock": (
                PARTLY,
                "blocked where the kernel's Landlock ABI is 6 or later (Linux 6.12: signals "
                "scoped to the sandbox); NOT blocked before that (same user)",
            ),
            "docker": (BLOCKED, "the host is outside the container"),
            "local": (NOT_BLOCKED, "it is the host"),
        },
    ),
    "disk": (
        "Fill the disk",
        {
            "subprocess": (
                PARTLY,
                "1 GiB per file (RLIMIT_FSIZE); no total: its private working directory is "
                "on the host's disk (removed at the end)",
            ),
            "bwrap": (BLOCKED, "/tmp is a tmpfs capped at the memory limit; the rest is read-only"),
            "landlock": (
                PARTLY,
                "as subprocess: 1 GiB per file (RLIMIT_FSIZE), no total; its private "
                "temporary folder is on the host's disk",
            ),
            "docker": (BLOCKED, "as bwrap"),
            "local": (NOT_BLOCKED, "the host's disk"),
        },
    ),
}


def verdict(backend: str, attack: str) -> str:
    return ATTACKS[attack][1][backend][0]


def markdown_table() -> str:
    """The table of docs/SANDBOX.md, generated from ATTACKS."""
    head = "| model code tries to | " + " | ".join(BACKEND_ORDER) + " |"
    rule = "| --- |" + " --- |" * len(BACKEND_ORDER)
    rows = [head, rule]
    for label, cells in ATTACKS.values():
        parts = [f"**{cells[b][0]}**: {cells[b][1]}" for b in BACKEND_ORDER]
        rows.append(f"| {label} | " + " | ".join(parts) + " |")
    return "\n".join(rows) + "\n"
