"""The hub's configuration tree: defaults, documentation and checks in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeward.configfile import one_of, port_number, positive, setting

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class HubConfig:
    bind: str = setting(
        "127.0.0.1",
        "Address both listeners bind to. Use 0.0.0.0 to serve edges on other machines.",
    )
    api_port: int = setting(10002, "Port of the REST API (0 picks a free port).", port_number)
    edge_port: int = setting(
        10000, "Port of the edge websocket endpoint (0 picks a free port).", port_number
    )
    data_dir: str = setting("/var/lib/edgeward/hub", "Directory for the hub's own files.")
    database: str = setting(
        "",
        "SQLAlchemy database URL, e.g. postgresql://user@host/edgeward. "
        "Empty: SQLite at <data_dir>/hub.db.",
    )
    node_grace_period: float = setting(
        40.0, "Seconds without contact before a node is marked NotReady.", positive
    )
    change_log_retention: int = setting(
        100_000,
        "Revisions kept in the change log; an edge further behind gets a full snapshot.",
        positive,
    )
    max_watches: int = setting(
        1000,
        "Watches the REST API serves at once; more are refused with 429 (Too Many Requests) "
        "and counted in /healthz. Each holds a socket, a buffer of up to 10,000 change rows "
        "and, while it lists, about one object's text.",
        positive,
    )
    log_level: str = setting("info", "One of debug, info, warning, error.", one_of(*LOG_LEVELS))

    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{Path(self.data_dir).resolve() / 'hub.db'}"
