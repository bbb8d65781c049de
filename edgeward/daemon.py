"""What both daemons do the same way at start-up: logging and shutdown signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from edgeward.errors import ConfigError


def setup_logging(level: str, name: str) -> None:
    """One line per record on stderr (journald adds the time when run by systemd)."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    # websockets logs every failed handshake at INFO with a traceback; keep it for debug
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT; the supervisor shuts down when it is set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def data_directory(path: str) -> Path:
    """The daemon's data directory, created if needed; ConfigError when it cannot be."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([f"cannot create the data directory {path}: {exc.strerror}"]) from None
    if not os.access(directory, os.W_OK):
        raise ConfigError([f"the data directory {path} is not writable by this user"])
    return directory
