"""Run a command under a unit's system call sandbox, the way systemd 252 builds it.

``python -m tests.support.sandbox UNIT -- COMMAND…`` sets no_new_privs and
installs one seccomp filter made from the unit's ``SystemCallFilter=`` (an
allow list minus deny lists, resolved with ``systemd-analyze syscall-filter``),
``SystemCallErrorNumber=``, ``SystemCallArchitectures=native``,
``RestrictAddressFamilies=`` and ``MemoryDenyWriteExecute=`` (which systemd 252
also enforces with seccomp: no writable and executable mapping, no mprotect
adding PROT_EXEC, no SHM_EXEC), then execs COMMAND. No mount namespace and no
user switch: those need systemd itself (a later slice of issue 10 runs the
packages under a real systemd). x86-64 only: the syscall numbers come from the
kernel headers.

With ``--kill``, a refused system call kills the process (SIGSYS) instead of
failing with the unit's errno: that shows every call the filter refuses. Except
``@chown``, which still fails with the errno: SQLite gives its new journal and
WAL files the database file's owner when it runs as root, as the tests do, and
not as the units' user; it goes on when that fails.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import struct
import subprocess
import sys
from pathlib import Path

from tests.support.units import settings

HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}

# classic BPF, as seccomp takes it
LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
AND = 0x54  # BPF_ALU | BPF_AND | BPF_K
RET = 0x06  # BPF_RET | BPF_K
ALLOW, KILL, ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def supported() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if platform.machine() != "x86_64":
        return f"the sandbox knows x86-64 system call numbers only, not {platform.machine()}"
    if not HEADER.exists():
        return f"{HEADER} is missing (Debian package linux-libc-dev)"
    return None


def syscall_numbers() -> dict[str, int]:
    text = HEADER.read_text()
    return {name: int(nr) for name, nr in re.findall(r"#define __NR_(\w+)\s+(\d+)", text)}


def syscall_groups() -> dict[str, list[str]]:
    """systemd's named groups (``@system-service`` …) and what each lists."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= expand(groups[name], groups) if name.startswith("@") else {name}
    return found


def allowed_syscalls(unit: dict[str, list[str]]) -> set[str]:
    """The allow list systemd builds: the first (allow) line, less every ``~`` line."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in unit.get("Service.SystemCallFilter", []):
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if deny:
            allowed -= expand(names, groups)
        else:
            allowed |= expand(names, groups)
    return allowed


def arg(index: int) -> int:
    """Offset of a system call argument's low 32 bits in struct seccomp_data."""
    return 16 + 8 * index


def program(unit: dict[str, list[str]], kill: bool) -> list[tuple[int, int, int, int]]:
    numbers = syscall_numbers()
    allowed = {numbers[name] for name in allowed_syscalls(unit) if name in numbers}
    errno_name = unit.get("Service.SystemCallErrorNumber", [""])[-1]
    refuse = KILL if kill or not errno_name else ERRNO | getattr(errno, errno_name)
    prog = [
        (LD_ABS, 0, 0, 4),  # arch
        (JEQ, 1, 0, AUDIT_ARCH_X86_64),
        (RET, 0, 0, KILL),
        (LD_ABS, 0, 0, 0),  # nr
        (JSET, 0, 1, X32_SYSCALL_BIT),
        (RET, 0, 0, KILL),
    ]
    if unit.get("Service.MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        # mmap: not both writable and executable
        prog += [
            (JEQ, 0, 5, numbers["mmap"]),
            (LD_ABS, 0, 0, arg(2)),
            (AND, 0, 0, PROT_WRITE | PROT_EXEC),
            (JEQ, 0, 1, PROT_WRITE | PROT_EXEC),
            (RET, 0, 0, refuse),
            (RET, 0, 0, ALLOW),
        ]
        for name, flag in (("mprotect", PROT_EXEC), ("pkey_mprotect", PROT_EXEC)):
            prog += _refuse_flag(numbers[name], 2, flag, refuse)
        prog += _refuse_flag(numbers["shmat"], 2, SHM_EXEC, refuse)
    families = unit.get("Service.RestrictAddressFamilies", [])
    if families:
        kept = [FAMILIES[f] for f in families[-1].split()]
        no_family = KILL if kill else ERRNO | errno.EAFNOSUPPORT
        prog.append((JEQ, 0, len(kept) + 3, numbers["socket"]))
        prog.append((LD_ABS, 0, 0, arg(0)))
        for i, family in enumerate(kept):
            prog.append((JEQ, len(kept) - i, 0, family))
        prog += [(RET, 0, 0, no_family), (RET, 0, 0, ALLOW)]
        prog.append((LD_ABS, 0, 0, 0))  # where other calls go on: nr again
    for nr in sorted(allowed):
        prog += [(JEQ, 0, 1, nr), (RET, 0, 0, ALLOW)]
    if kill:
        for name in sorted(expand(["@chown"], syscall_groups()) & numbers.keys()):
            prog += [(JEQ, 0, 1, numbers[name]), (RET, 0, 0, ERRNO | errno.EPERM)]
    prog.append((RET, 0, 0, refuse))
    return prog


def _refuse_flag(nr: int, index: int, flag: int, refuse: int) -> list[tuple[int, int, int, int]]:
    """A call ``nr`` whose argument ``index`` has ``flag`` set is refused; otherwise allowed."""
    return [
        (JEQ, 0, 4, nr),
        (LD_ABS, 0, 0, arg(index)),
        (JSET, 0, 1, flag),
        (RET, 0, 0, refuse),
        (RET, 0, 0, ALLOW),
    ]


def install(prog: list[tuple[int, int, int, int]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    code = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(buffer))
    fprog_buffer = ctypes.create_string_buffer(fprog)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, fprog_buffer, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str]) -> None:
    kill = argv[0] == "--kill"
    if kill:
        argv = argv[1:]
    unit_name, separator, *command = argv
    assert separator == "--" and command, "usage: sandbox [--kill] UNIT -- COMMAND…"
    install(program(settings(unit_name), kill))
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
