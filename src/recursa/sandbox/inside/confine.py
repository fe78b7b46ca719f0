"""The landlock backend's self-confinement: Landlock and a seccomp filter, by ctypes alone.

The worker imports this (beside it, standard library only) and calls `confine` while it
handles `init`, before any model code runs; the host imports it to read the kernel's
Landlock ABI. Everything applied here lasts for the worker and every process it starts:

- Landlock (ABI 1+): reads only beneath the paths the host names, writes only beneath the
  worker's own temporary folder; ABI 3+ also guards truncation, ABI 4+ denies TCP bind and
  connect, ABI 6+ scopes signals and abstract unix sockets to the sandbox.
- seccomp (with the architecture check): no new sockets at all (the channel is pipes), no
  ptrace, mount, chroot, unshare, setns or clone into new namespaces, no io_uring, bpf,
  keyrings or kernel modules. Refused calls fail with EPERM (clone3 with ENOSYS, so that
  the C library falls back to clone, whose flags the filter can see).
- no_new_privs, which both need: no exec can gain privileges again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446  # the same on x86_64 and aarch64
RULE_PATH_BENEATH = 1

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_ABI1 = (1 << 13) - 1  # execute ... make_sym: every right ABI 1 knows
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
NET_TCP = 0b11  # bind, connect
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR

# (AUDIT_ARCH, syscall numbers) per machine; x86_64 also refuses x32 numbers (>= 2**30).
ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "socket": 41, "socketpair": 53, "ptrace": 101, "unshare": 272, "mount": 165,
            "umount2": 166, "chroot": 161, "pivot_root": 155, "setns": 308, "clone": 56,
            "clone3": 435, "io_uring_setup": 425, "bpf": 321, "perf_event_open": 298,
            "process_vm_readv": 310, "process_vm_writev": 311, "keyctl": 250, "add_key": 248,
            "request_key": 249, "userfaultfd": 323, "open_tree": 428, "move_mount": 429,
            "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
            "mount_setattr": 442, "kexec_load": 246, "init_module": 175,
            "finit_module": 313, "delete_module": 176, "truncate": 76,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "socket": 198, "socketpair": 199, "ptrace": 117, "unshare": 97, "mount": 40,
            "umount2": 39, "chroot": 51, "pivot_root": 41, "setns": 268, "clone": 220,
            "clone3": 435, "io_uring_setup": 425, "bpf": 280, "perf_event_open": 241,
            "process_vm_readv": 270, "process_vm_writev": 271, "keyctl": 219, "add_key": 217,
            "request_key": 218, "userfaultfd": 282, "open_tree": 428, "move_mount": 429,
            "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
            "mount_setattr": 442, "kexec_load": 104, "init_module": 105,
            "finit_module": 273, "delete_module": 106, "truncate": 45,
        },
    ),
}  # fmt: skip
ARCHES["arm64"] = ARCHES["aarch64"]
CLONE_NEW_ANY = 0x7E020080  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi() -> int:
    """The kernel's Landlock ABI version: 0 where Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc.syscall(CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def problem() -> str | None:
    """Why this machine cannot confine a worker, or None when it can."""
    if os.uname().machine not in ARCHES:
        return f"the landlock backend knows x86_64 and aarch64 only, not {os.uname().machine}"
    if abi() < 1:
        return "the kernel has no Landlock (Linux 5.13+ with landlock in the LSM list)"
    if _libc.prctl(21, 0, 0, 0, 0) < 0:  # PR_GET_SECCOMP
        return "the kernel has no seccomp"
    return None


def protections(version: int) -> list[str]:
    """What `confine` applies on a kernel of Landlock ABI `version`, in words."""
    shown = ["files (Landlock)"]
    if version >= 4:
        shown.append("TCP (Landlock)")
    if version >= 6:
        shown += ["signals", "abstract unix sockets"]
    return [*shown, "sockets, ptrace, namespaces and mounts (seccomp)", "no_new_privs"]


def confine(options: dict[str, Any]) -> dict[str, Any]:
    """Confine this process for good (`options`: read, write: lists of paths). Raises
    OSError where any step fails: the worker then ends and the host reports it."""
    version = abi()
    if version < 1:
        raise OSError(errno.ENOSYS, "Landlock is not available")
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        _fail("no_new_privs")
    _landlock(version, list(options.get("read", [])), list(options.get("write", [])))
    _seccomp(truncate_too=version < 3)
    return {"abi": version, "protections": protections(version)}


def _handled_fs(version: int) -> int:
    rights = FS_ABI1
    if version >= 2:
        rights |= FS_REFER
    if version >= 3:
        rights |= FS_TRUNCATE
    if version >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def _landlock(version: int, read: list[str], write: list[str]) -> None:
    handled = _handled_fs(version)
    net = NET_TCP if version >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if version >= 6 else 0
    attr = struct.pack("=QQQ", handled, net, scoped)
    size = 24 if version >= 6 else 16 if version >= 4 else 8
    buf = ctypes.create_string_buffer(attr[:size], size)
    ruleset = _libc.syscall(CREATE_RULESET, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        _fail("landlock_create_ruleset")
    try:
        for path in read:
            _allow(ruleset, path, READ & handled)
        for path in write:  # everything but execute: no binary written here runs
            _allow(ruleset, path, handled & ~FS_EXECUTE)
        if _libc.syscall(RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow(ruleset: int, path: str, rights: int) -> None:
    """Grant `rights` beneath `path` (a file gets only a file's rights); a path that does
    not exist is skipped: there is nothing there to read."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
        if _libc.syscall(ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH), rule,
                         ctypes.c_uint32(0)) != 0:  # fmt: skip
            _fail(f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def _seccomp(truncate_too: bool) -> None:
    arch, numbers = ARCHES[os.uname().machine]
    denied = [n for name, n in numbers.items() if name not in ("clone", "clone3", "truncate")]
    if truncate_too:  # before ABI 3, Landlock does not guard truncate(2) by path
        denied.append(numbers["truncate"])
    program = seccomp_program(arch, denied, numbers["clone"], numbers["clone3"])
    filters = (ctypes.c_char * len(program)).from_buffer_copy(program)
    fprog = struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
    arg = ctypes.create_string_buffer(fprog, 16)
    if _libc.prctl(22, 2, arg, 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        _fail("seccomp")


def seccomp_program(arch: int, denied: list[int], clone: int, clone3: int) -> bytes:
    """The classic BPF program, assembled: a foreign architecture is killed, each denied
    call returns EPERM, clone3 ENOSYS, clone with a new-namespace flag EPERM, the rest runs."""
    ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    prog = [op(ld, 4), op(jeq, arch, 1, 0), op(ret, kill), op(ld, 0)]
    if arch == ARCHES["x86_64"][0]:
        prog.append(op(jge, 0x40000000, len(denied) + 6, 0))  # an x32 number: to EPERM
    for i, number in enumerate(denied):  # a match jumps to the EPERM at the end
        prog.append(op(jeq, number, len(denied) - i + 5, 0))
    prog += [
        op(jeq, clone3, 0, 1),
        op(ret, enosys),
        op(jeq, clone, 0, 2),
        op(ld, 16),  # the low half of clone's flags
        op(jset, CLONE_NEW_ANY, 1, 0),
        op(ret, allow),
        op(ret, eperm),
    ]
    return b"".join(prog)


def _fail(step: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"could not confine the worker ({step}): {os.strerror(code)}")
