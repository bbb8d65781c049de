"""What both daemons do the same way at start-up: logging, shutdown signals, systemd's socket."""

from __future__ import annotations

import asyncio
import faulthandler
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeward.errors import ConfigError, FatalError
from edgeward.sdnotify import Notifier


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


def defer_imports(*names: str) -> None:
    """Run each named module's code only when one of its attributes is first used.

    For modules that libraries import at their top but use only on paths a daemon
    never takes (websockets' version lookup of a development checkout, the proxy
    lookups of websockets and paho): each costs RSS for the daemon's whole life.
    The module object is in ``sys.modules`` at once, so ``import`` statements bind
    it as usual; the first attribute read (``from … import``, a call) loads it,
    from whichever thread. A module already imported, or not installed, is left
    as it is. Call before importing the libraries.
    """
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__getattr__ = _Loader(module)  # type: ignore[method-assign]
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


class _Loader:
    """A deferred module's ``__getattr__`` until its code has run: runs it on the first read.

    It stays in place while the code runs, so a second thread reading an attribute then
    waits on the lock for the whole module instead of finding it half made (paho reads
    ``urllib.request.getproxies`` from two connecting threads at once when PySocks is
    installed). A read from inside the module's own code, before it is done, is an
    AttributeError, as for a module being imported.
    """

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.lock = threading.RLock()
        self.running = False

    def __call__(self, attr: str) -> Any:
        with self.lock:
            if vars(self.module).get("__getattr__") is self:
                if self.running:
                    raise AttributeError(
                        f"module {self.module.__name__!r} is still loading (reading {attr!r})"
                    )
                self._run()
        return getattr(self.module, attr)

    def _run(self) -> None:
        spec = self.module.__spec__
        assert spec is not None and spec.loader is not None
        self.running = True
        try:
            spec.loader.exec_module(self.module)
        except BaseException:
            del sys.modules[spec.name]  # as a failed import leaves it
            raise
        finally:
            self.running = False
            if vars(self.module).get("__getattr__") is self:
                del self.module.__getattr__


def run_daemon(
    name: str, load: Callable[[], Any], serve: Callable[[Any, Notifier], Awaitable[None]]
) -> int:
    """Load the config, set up logging and serve until stopped; the exit status.

    ``serve`` gets the config and the notifier systemd set up (see edgeward.sdnotify).
    Every configuration problem is one ``<name>: <problem>`` line on stderr and exit 2; a
    FatalError (raised alone or from a task group) is one line and exit 1.
    """
    notifier = Notifier.from_environ(os.environ)
    # when systemd's watchdog kills a hung daemon (SIGABRT), the journal shows where
    # every thread was stuck
    faulthandler.enable()
    try:
        config = load()
        setup_logging(config.log_level, name)
        asyncio.run(serve(config, notifier))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{name}: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (FatalError, BaseExceptionGroup) as exc:
        fatal = _fatal(exc)
        if fatal is None:
            raise
        print(f"{name}: {fatal}", file=sys.stderr)
        notifier.stopping(str(fatal))
        return 1
    finally:
        notifier.close()
    return 0


def _fatal(exc: BaseException) -> FatalError | None:
    """The FatalError that ended a daemon: ``exc`` itself, or one inside a task group's error."""
    if isinstance(exc, FatalError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _fatal(inner)) is not None:
                return found
    return None
