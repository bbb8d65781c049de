"""The hub's audit log: every write and every refused request, with the identity behind it.

JSON lines in ``<data_dir>/audit.log``, rotated by size (``audit.log.1`` … ``.N``),
written from any thread. One line per event::

    {"time": "2026-11-30T05:09:16.123Z", "identity": "token:abc123", "role": "admin",
     "action": "PATCH", "target": "/api/v1/namespaces/default/devices/thermo",
     "outcome": 200, "peer": "10.0.0.7"}

``outcome`` is the HTTP status, or on the edge port ``refused``; ``reason`` says
why a request was refused. A failing disk never fails a request: the logging
module reports the write error on stderr and the request goes on.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class _JsonLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": _iso(record.created), **record.msg}  # type: ignore[dict-item]
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


class AuditLog:
    """Appends audit events to a size-rotated JSON-lines file; ``None`` path: discard them."""

    def __init__(
        self,
        path: Path | None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        self.path = path
        self._log = logging.Logger(f"audit:{path}")  # not in the logging tree: no propagation
        if path is not None:
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            handler.setFormatter(_JsonLine())
            self._log.addHandler(handler)
        else:
            self._log.addHandler(logging.NullHandler())

    def record(
        self,
        identity: Any,
        action: str,
        target: str,
        outcome: int | str,
        peer: str | None = None,
        reason: str | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "identity": getattr(identity, "name", str(identity)),
            "role": getattr(identity, "role", None),
            "action": action,
            "target": target,
            "outcome": outcome,
        }
        node = getattr(identity, "node", None)
        if node:
            entry["node"] = node
        if peer:
            entry["peer"] = peer
        if reason:
            entry["reason"] = reason[:500]
        self._log.info(entry)

    def close(self) -> None:
        for handler in self._log.handlers:
            handler.close()


def _iso(epoch: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"
    )
