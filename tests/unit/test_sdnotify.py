"""sd_notify over a real datagram socket, as systemd listens on it."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeward.sdnotify import Notifier
from tests.support.notify import NotifySocket


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    """A daemon started by hand (no $NOTIFY_SOCKET) runs as before: every call is a no-op."""
    notifier = Notifier.from_environ({})
    assert not notifier.enabled and notifier.watchdog_timeout is None
    notifier.ready("up")
    notifier.ping()
    notifier.stopping("bye")
    notifier.close()


def test_messages_reach_the_socket_and_the_variables_leave_the_environment(
    listener: NotifySocket,
) -> None:
    """READY, STATUS, WATCHDOG and STOPPING arrive as systemd parses them; the variables are
    taken out of the environment so that child processes do not inherit them."""
    environ = {**listener.environ(watchdog=30), "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    notifier = Notifier.from_environ(environ)
    assert environ == {"PATH": "/bin"}
    assert notifier.watchdog_timeout == 30.0
    notifier.ready("serving, 3 devices")
    notifier.status("two\nlines")
    notifier.ping()
    notifier.stopping("stopping")
    listener.wait(lambda m: "STOPPING" in m.fields, "STOPPING=1")
    assert [m.fields for m in listener.messages] == [
        {"READY": "1", "STATUS": "serving, 3 devices"},
        {"STATUS": "two lines"},  # a newline would start another assignment
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]
    notifier.close()


def test_an_abstract_socket_is_written_with_an_at_sign() -> None:
    """``@name`` is the abstract socket ``\\0name``, as systemd and sd_notify(3) spell it."""
    name = f"edgeward-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
        notifier.close()


@pytest.mark.parametrize(
    ("environ", "timeout"),
    [
        ({"WATCHDOG_USEC": "4000000"}, 4.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_the_watchdog_is_on_only_when_systemd_set_it_for_this_process(
    environ: dict[str, str], timeout: float | None
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/nonexistent", **environ})
    assert notifier.watchdog_timeout == timeout


def test_a_socket_that_went_away_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon must not fail because systemd's socket is gone: one warning, then silence."""
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, logger="edgeward.sdnotify"):
        for _ in range(3):
            notifier.ping()
    assert len(caplog.records) == 1
    assert "cannot notify systemd" in caplog.records[0].getMessage()
    notifier.close()
