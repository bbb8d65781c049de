"""edgecore's systemd unit, as ``edgeward join`` and ``edgeward reset`` drive it.

Every call is a plain ``systemctl`` command (``enable``, ``restart``, ``stop``,
``disable``, ``show -p ...``) run from ``$PATH``, so a host's own systemctl is
the one used, and a test puts a stand-in first on ``$PATH``. A non-zero exit is
a :class:`~edgeward.cli.errors.CliError` carrying systemctl's first line of
stderr.

What a unit's properties mean for the caller is decided by :class:`UnitState`
and :func:`wait_connected` with an injectable reader, clock and sleep; the
subprocess calls stay in :func:`systemctl` and :func:`unit_state`.

The host probes (:func:`is_systemd_host`, :func:`is_root`) and
:data:`UNIT_CONFIG` are module attributes looked up at each call, so a test
that runs the CLI in-process can point them at its own answers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeward.cli.errors import CliError

UNIT = "edgecore.service"
#: The config the packaged unit runs edgecore with (packaging/systemd/edgecore.service).
UNIT_CONFIG = Path("/etc/edgeward/edgecore.yaml")
#: Exists when systemd is the init system: sd_booted(3)'s test.
SYSTEMD_RUN_DIR = Path("/run/systemd/system")
#: The status line edgecore sends systemd once its hub link is up (edgecore/hublink.py).
CONNECTED = "connected to hub"
JOURNAL = "journalctl -u edgecore -n 50"
#: Seconds between looks at the unit while waiting for it to connect.
POLL_SECONDS = 0.5
#: Seconds a ``systemctl show`` may take; ``restart`` waits as long as systemd does.
SHOW_TIMEOUT = 30.0

PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "StatusText")


def is_systemd_host() -> bool:
    """systemd runs this machine (so its units can be started)."""
    return SYSTEMD_RUN_DIR.is_dir()


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class UnitState:
    """What ``systemctl show`` says about the unit; empty strings for what it did not say."""

    load: str = ""
    active: str = ""
    sub: str = ""
    file: str = ""
    status: str = ""

    @classmethod
    def parse(cls, text: str) -> UnitState:
        """From ``systemctl show -p A,B,...`` output: ``KEY=VALUE`` lines in systemd's order."""
        found: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                found.setdefault(key, value)
        return cls(
            load=found.get("LoadState", ""),
            active=found.get("ActiveState", ""),
            sub=found.get("SubState", ""),
            file=found.get("UnitFileState", ""),
            status=found.get("StatusText", ""),
        )

    @property
    def installed(self) -> bool:
        return self.load not in ("", "not-found")

    @property
    def running(self) -> bool:
        """A process runs or is about to (stop it before taking its credentials away)."""
        return self.active not in ("", "inactive", "failed")

    @property
    def enabled(self) -> bool:
        return self.file.startswith("enabled")

    @property
    def connected(self) -> bool:
        return self.active == "active" and self.status.startswith(CONNECTED)

    @property
    def ended(self) -> bool:
        """Not running and not coming back by itself: waiting longer cannot help."""
        return self.active in ("failed", "inactive")

    def describe(self) -> str:
        """The state in a few words, for a progress or error line."""
        if self.sub == "auto-restart":
            return f"edgecore exited and systemd restarts it ({JOURNAL} says why)"
        if self.status:
            return self.status
        return f"{self.active or 'unknown'} ({self.sub})" if self.sub else self.active or "unknown"

    def phase(self) -> tuple[str, str, str]:
        """What a progress line changes with: not every new outbox count in the status."""
        return self.active, self.sub, self.describe().split(", ")[0]


def systemctl(*args: str, hint: str = "", timeout: float | None = None) -> str:
    """``systemctl ARGS``'s stdout; CliError with its first stderr line when it fails."""
    command = ["systemctl", *args]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise CliError("systemctl is not on PATH, though systemd runs this machine") from None
    except subprocess.TimeoutExpired:
        raise CliError(f"{' '.join(command)} did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        first = next((line.strip() for line in done.stderr.splitlines() if line.strip()), "")
        reason = first.rstrip(".") or f"exit status {done.returncode}"
        raise CliError(f"{' '.join(command)} failed: {reason}{hint}")
    return done.stdout


def unit_state() -> UnitState:
    return UnitState.parse(
        systemctl("show", "-p", ",".join(PROPERTIES), UNIT, timeout=SHOW_TIMEOUT)
    )


def unit_installed() -> bool:
    return unit_state().installed


def enable_and_restart() -> None:
    """Start at boot, and (re)start now: a re-join's new credentials take effect."""
    systemctl("enable", UNIT)
    systemctl("restart", UNIT, hint=f"; see {JOURNAL}")


def stop_and_disable(state: UnitState) -> list[str]:
    """Stop the unit if it runs and keep it from starting at boot; what was done."""
    done = []
    if state.running:
        systemctl("stop", UNIT)
        done.append(f"stopped {UNIT}")
    if state.enabled:
        systemctl("disable", UNIT)
        done.append(f"disabled {UNIT}")
    return done


class Ended(CliError):
    """The unit failed or stopped while we waited for it to connect."""

    def __init__(self, state: UnitState) -> None:
        what = "failed" if state.active == "failed" else f"stopped ({state.active})"
        last = f" (last status: {state.status})" if state.status else ""
        super().__init__(f"{UNIT} {what} before edgecore connected to the hub{last}; see {JOURNAL}")
        self.state = state


class NotConnected(CliError):
    """edgecore runs but did not connect to the hub in time."""

    def __init__(self, state: UnitState, timeout: float, endpoints: Sequence[str]) -> None:
        where = " or ".join(endpoints) or "the hub's edge address"
        super().__init__(
            f"edgecore did not connect to the hub within {timeout:g} s (last status: "
            f"{state.describe()}); check {JOURNAL}, that this gateway reaches {where}, "
            "and that its clock is right (timedatectl)"
        )
        self.state = state
        self.timeout = timeout


def wait_connected(
    timeout: float,
    *,
    endpoints: Sequence[str] = (),
    report: Callable[[UnitState], None],
    read: Callable[[], UnitState] = unit_state,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll: float | None = None,
) -> UnitState:
    """Poll the unit until edgecore says it is connected to the hub, and return that state.

    ``report`` gets the state each time its phase changes (see :meth:`UnitState.phase`).
    Raises :class:`Ended` when the unit stops for good, :class:`NotConnected` after
    ``timeout`` seconds (naming ``endpoints``, the hub's edge addresses, to check).
    """
    interval = POLL_SECONDS if poll is None else poll
    deadline = clock() + timeout
    shown: tuple[str, str, str] | None = None
    while True:
        state = read()
        if state.connected:
            return state
        if state.ended:
            raise Ended(state)
        if state.phase() != shown:
            shown = state.phase()
            report(state)
        left = deadline - clock()
        if left <= 0:
            raise NotConnected(state, timeout, endpoints)
        sleep(min(interval, left))
