"""Clean Debian roots for the package tests, and a real systemd running in one.

A root is made once per (release, architecture, package list) with debootstrap and kept
in ``~/.cache/edgeward/roots``; each test works on an overlay of it, so what a test
installs is gone afterwards and the cached root stays clean.

:class:`Machine` boots systemd as PID 1 of its own PID, mount and network namespaces
(``unshare … chroot ROOT /lib/systemd/systemd --system``) and is driven with
``nsenter``. A veth pair joins its network to the host's: the machine is a gateway at
``address`` that reaches a hub the test runs on the host at ``host_address``. Settings
that need mount namespaces (ProtectSystem=, PrivateTmp=, …) fail there with status
226/NAMESPACE, so tests lift them in a drop-in (:data:`NAMESPACE_FREE`); the unit as
shipped is judged by ``systemd-analyze security`` in the fast suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeward" / "roots"
MIRROR = os.environ.get("EDGEWARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: What the packages depend on and the tests use, in the root from the start: installing
#: the .debs then needs no download.
BASE = ("python3", "python3-yaml", "adduser", "libpq5", "ca-certificates")
SYSTEMD = ("systemd", "systemd-sysv", "dbus", "mosquitto", "iproute2", "procps")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}

#: Drop-in lifting what a PID namespace inside a chroot cannot set up.
NAMESPACE_FREE = """\
[Service]
ProtectSystem=no
ProtectHome=no
PrivateTmp=no
PrivateDevices=no
PrivateMounts=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectClock=no
ProtectHostname=no
ProtectProc=default
ReadWritePaths=
"""

T = TypeVar("T")


def wait(check: Callable[[], T | None], timeout: float, what: str, step: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


#: Roots being made in the background (:func:`make_roots_meanwhile`), by their arguments.
_making: dict[tuple[str, str, bool], Future[Path]] = {}


def make_roots_meanwhile(*wanted: tuple[str, str, bool]) -> None:
    """Start making the roots not cached yet, all at once, in the background: debootstrap
    mostly waits on the mirror and on qemu, so on a clean machine the three roots take about
    as long together as the slowest alone, and the packages build meanwhile."""
    missing = [key for key in wanted if key not in _making and not _is_cached(*key)]
    if not missing:
        return
    # said here, before the tests start: a thread's print would go to a test's captured output
    names = ", ".join(f"{suite} {arch}" for suite, arch, _ in missing)
    print(f"\nmaking Debian roots in {CACHE} in the background (once; cached): {names}")
    pool = ThreadPoolExecutor(max_workers=len(missing), thread_name_prefix="debootstrap")
    for key in missing:
        _making[key] = pool.submit(_make_root, *key)
    pool.shutdown(wait=False)


def cached_root(suite: str, arch: str, with_systemd: bool) -> Path:
    """A debootstrapped root, made on first use (a minute or two; arm64 several), or the one
    being made in the background."""
    making = _making.get((suite, arch, with_systemd))
    if making is not None:
        return making.result()
    return _make_root(suite, arch, with_systemd)


def _root_of(suite: str, arch: str, with_systemd: bool) -> tuple[Path, tuple[str, ...]]:
    """Where the root is cached, and the packages it holds."""
    packages = BASE + (SYSTEMD if with_systemd else ())
    key = hashlib.sha256(",".join(packages).encode()).hexdigest()[:8]
    return CACHE / f"{suite}-{arch}-{key}", packages


def _is_cached(suite: str, arch: str, with_systemd: bool) -> bool:
    return (_root_of(suite, arch, with_systemd)[0] / ".complete").exists()


def _make_root(suite: str, arch: str, with_systemd: bool) -> Path:
    root, packages = _root_of(suite, arch, with_systemd)
    if (root / ".complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"\nmaking a {suite} {arch} root in {root} (once; cached)", flush=True)
    began = time.monotonic()
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--arch={arch}",
        f"--include={','.join(packages)}",
        suite,
        str(partial),
        MIRROR,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-5:])
        raise RuntimeError(f"debootstrap {suite} {arch} failed:\n{tail}\n{result.stderr[-500:]}")
    # systemd-binfmt would unregister the host's binfmt handlers (qemu's among them) as it
    # starts, and a test machine has no use for the others
    systemd_units = partial / "etc" / "systemd" / "system"
    for unit in ("systemd-binfmt.service", "getty@.service", "systemd-logind.service"):
        (systemd_units / unit).unlink(missing_ok=True)
        (systemd_units / unit).symlink_to("/dev/null")
    subprocess.run(["chroot", str(partial), "apt-get", "clean"], env=ENV, check=False)
    (partial / ".complete").write_text(" ".join(command) + "\n")
    partial.rename(root)
    print(f"\nmade the {suite} {arch} root in {time.monotonic() - began:.0f} s", flush=True)
    return root


class Overlay:
    """A writable copy of ``lower`` at ``work/root`` that costs only what changes."""

    def __init__(self, lower: Path, work: Path) -> None:
        self.root = work / "root"
        upper, scratch = work / "upper", work / "work"
        for path in (self.root, upper, scratch):
            path.mkdir(parents=True)
        options = f"lowerdir={lower},upperdir={upper},workdir={scratch}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)], check=True
        )

    def run(self, *command: str, check: bool = True, timeout: float = 600) -> str:
        """A command in the root (chroot, no systemd): its stdout."""
        return _run(["chroot", str(self.root), *command], check=check, timeout=timeout)

    def close(self) -> None:
        for mount in ("proc", "sys", "dev"):
            subprocess.run(["umount", "-l", str(self.root / mount)], capture_output=True)
        subprocess.run(["umount", "-l", str(self.root)], check=False)


_subnets = itertools.count(os.getpid() % 200)


class Machine(Overlay):
    """An overlay root with systemd running in it as PID 1, on a network of its own."""

    def __init__(self, lower: Path, work: Path) -> None:
        super().__init__(lower, work)
        subnet = 10 + next(_subnets) % 240
        self.host_address = f"10.213.{subnet}.1"
        self.address = f"10.213.{subnet}.2"
        self.log = (work / "systemd.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--fork",
                "--pid",
                "--mount",
                "--net",
                f"--mount-proc={self.root / 'proc'}",
                "chroot",
                str(self.root),
                "/lib/systemd/systemd",
                "--system",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**ENV, "container": "edgeward-test"},
            start_new_session=True,
        )
        self.pid = wait(self._init_pid, 20, "systemd to start in the test root")
        self._link(subnet)
        wait(self._booted, 60, "systemd to finish booting")

    def _init_pid(self) -> int | None:
        """The PID (in our namespace) of the namespace's PID 1: unshare's child."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        return int(children.split()[0]) if children.split() else None

    def _link(self, subnet: int) -> None:
        host, peer = f"ew{subnet}h{os.getpid() % 1000}", f"ew{subnet}m{os.getpid() % 1000}"
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        for command in (
            ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
            ["ip", "link", "set", peer, "netns", str(self.pid)],
            ["ip", "addr", "add", f"{self.host_address}/24", "dev", host],
            ["ip", "link", "set", host, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        inside = ["nsenter", "-t", str(self.pid), "-n", "ip"]
        for command in (
            ["link", "set", "lo", "up"],
            ["addr", "add", f"{self.address}/24", "dev", peer],
            ["link", "set", peer, "up"],
        ):
            subprocess.run([*inside, *command], check=True, capture_output=True)

    def _booted(self) -> bool:
        state = self.run("systemctl", "is-system-running", check=False).strip()
        return state in {"running", "degraded"}

    def run(self, *command: str, check: bool = True, timeout: float = 600) -> str:
        """A command in the machine, as systemd's other processes see the world."""
        return _run(
            ["nsenter", "-t", str(self.pid), "-p", "-m", "-n", "chroot", str(self.root), *command],
            check=check,
            timeout=timeout,
        )

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        text = self.systemctl("show", unit, "-p", ",".join(properties))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def close(self) -> None:
        # the namespace ends with its PID 1, and every process in it
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()
        super().close()


def _run(command: list[str], check: bool, timeout: float) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, env=ENV, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command[-6:])} exited {result.returncode}:\n{result.stdout[-2000:]}"
            f"\n{result.stderr[-2000:]}"
        )
    return result.stdout
