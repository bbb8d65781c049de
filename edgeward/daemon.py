"""What both daemons do the same way at start-up: logging and shutdown signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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


def config_file(given: str | None, default: str) -> str | None:
    """The config file to read: the one given, else ``default`` when it exists, else none."""
    return given or (default if Path(default).exists() else None)


def run_daemon(name: str, load: Callable[[], Any], serve: Callable[[Any], Awaitable[None]]) -> int:
    """Load the config, set up logging and serve until stopped; the exit status.

    Every configuration problem is one ``<name>: <problem>`` line on stderr and exit 2.
    """
    try:
        config = load()
        setup_logging(config.log_level, name)
        asyncio.run(serve(config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{name}: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
