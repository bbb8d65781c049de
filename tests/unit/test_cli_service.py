"""What ``edgeward join`` makes of edgecore.service's properties while it waits, in
virtual time: no systemctl, no processes."""

from __future__ import annotations

import pytest

from edgeward.cli.service import Ended, NotConnected, UnitState, wait_connected
from tests.support.clock import T0, ManualClock

EDGE = "wss://hub.example:10001"


def unit(active: str = "active", sub: str = "running", status: str = "") -> UnitState:
    return UnitState(load="loaded", active=active, sub=sub, file="enabled", status=status)


def test_show_output_is_read_by_name_in_any_order() -> None:
    """systemd prints properties in its own order, not the -p order; empty values count."""
    state = UnitState.parse(
        f"StatusText=connected to hub {EDGE}, 2 devices, outbox 0\n"
        "UnitFileState=enabled\nLoadState=loaded\nActiveState=active\nSubState=running\n"
    )
    assert state.connected and state.installed and state.enabled and state.running
    missing = UnitState.parse("LoadState=not-found\nActiveState=inactive\nStatusText=\n")
    assert not missing.installed and not missing.running and missing.ended


def test_a_status_with_a_stale_connected_line_is_not_connected_until_active() -> None:
    """Only a running unit's own status line counts."""
    assert not unit("activating", "start", f"connected to hub {EDGE}").connected
    assert not unit(status="hub unreachable (retrying)").connected


class Script:
    """Hands out states in order, one per look, then keeps to the last."""

    def __init__(self, *states: UnitState) -> None:
        self.states = list(states)

    def read(self) -> UnitState:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def wait(clock: ManualClock, script: Script, timeout: float, shown: list[str]) -> UnitState:
    def sleep(seconds: float) -> None:
        clock.now += seconds

    return wait_connected(
        timeout,
        endpoints=[EDGE],
        report=lambda state: shown.append(state.describe()),
        read=script.read,
        clock=clock,
        sleep=sleep,
        poll=0.5,
    )


def test_progress_is_reported_once_per_phase_not_per_poll() -> None:
    """A new outbox count is the same phase; a retry is a new one."""
    clock = ManualClock()
    script = Script(
        unit(status=f"connecting to hub {EDGE}, 0 devices, outbox 1"),
        unit(status=f"connecting to hub {EDGE}, 0 devices, outbox 2"),
        unit(status="hub unreachable (retrying), 0 devices, outbox 2"),
        unit(status="hub unreachable (retrying), 0 devices, outbox 3"),
        unit(status=f"connected to hub {EDGE}, 0 devices, outbox 0"),
    )
    shown: list[str] = []
    state = wait(clock, script, 60, shown)
    assert state.status.startswith("connected to hub")
    assert shown == [
        f"connecting to hub {EDGE}, 0 devices, outbox 1",
        "hub unreachable (retrying), 0 devices, outbox 2",
    ]


def test_giving_up_after_the_timeout_names_what_to_check() -> None:
    clock = ManualClock()
    script = Script(unit(status="hub unreachable (retrying)"))
    with pytest.raises(NotConnected) as info:
        wait(clock, script, 10, [])
    assert clock() - T0 == pytest.approx(10)
    message = info.value.message
    assert "within 10 s (last status: hub unreachable (retrying))" in message
    assert "journalctl -u edgecore -n 50" in message and EDGE in message
    assert "clock" in message


def test_a_failed_unit_ends_the_wait_at_once() -> None:
    """A restart loop is shown as such; the unit failing for good stops the wait."""
    clock = ManualClock()
    script = Script(
        unit("activating", "auto-restart", f"connecting to hub {EDGE}"),
        unit("failed", "failed", f"connecting to hub {EDGE}"),
    )
    shown: list[str] = []
    with pytest.raises(Ended) as info:
        wait(clock, script, 120, shown)
    assert clock() - T0 < 1
    assert shown == [
        "edgecore exited and systemd restarts it (journalctl -u edgecore -n 50 says why)"
    ]
    assert info.value.message == (
        f"edgecore.service failed before edgecore connected to the hub (last status: "
        f"connecting to hub {EDGE}); see journalctl -u edgecore -n 50"
    )
