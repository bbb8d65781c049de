"""The hub's configuration tree: defaults, documentation and checks in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgeward.configfile import non_negative, one_of, port_number, positive, setting

LOG_LEVELS = ("debug", "info", "warning", "error")
#: A replica's transaction may sit idle for this many leader timeouts (HubConfig).
IDLE_TRANSACTION_LEADER_TIMEOUTS = 3


def _advertised(value: tuple[str, ...]) -> str | None:
    for url in value:
        parts = urlsplit(url)
        if parts.scheme != "wss" or not parts.hostname:
            return f'"{url}" is not a wss:// URL'
    return None


@dataclass(frozen=True)
class HubConfig:
    api_bind: str = setting(
        "",
        "Address the REST API (and node join) listens on. Empty: every interface "
        "(0.0.0.0) with TLS, 127.0.0.1 when insecure.",
    )
    api_port: int = setting(10002, "Port of the REST API (0 picks a free port).", port_number)
    edge_bind: str = setting(
        "",
        "Address the edge endpoint listens on. Empty: every interface (0.0.0.0) with TLS, "
        "127.0.0.1 when insecure.",
    )
    edge_port: int = setting(
        10000, "Port of the edge websocket endpoint (0 picks a free port).", port_number
    )
    insecure: bool = setting(
        False,
        "Serve plain HTTP and ws:// with no authentication at all, for a local experiment; "
        "never on a network. Without it the hub needs 'cloudhub init' first.",
    )
    edge_advertise: tuple[str, ...] = setting(
        (),
        "Edge endpoints announced to joining nodes, e.g. wss://hub.example:10000. Empty: "
        "wss://<the host name the node joined with>:<edge_port>.",
        _advertised,
    )
    node_certificate_days: float = setting(
        365.0,
        "Lifetime of node certificates in days; nodes renew them at two thirds of it.",
        positive,
    )
    node_frames_per_second: float = setting(
        200.0,
        "Frames one node may send per second (bursts of twice that); a faster node is "
        "slowed down, never disconnected, so it cannot starve the others.",
        positive,
    )
    data_dir: str = setting("/var/lib/edgeward/hub", "Directory for the hub's own files.")
    database: str = setting(
        "",
        "SQLAlchemy database URL, e.g. postgresql://user@host/edgeward. "
        "Empty: SQLite at <data_dir>/hub.db.",
    )
    edge_handshake_limit: int = setting(
        128,
        "Edge connections let through their TLS handshake and hello at once; the others "
        "wait their turn, so a fleet reconnecting together is served at the hub's pace "
        "instead of timing out (cloudhub/intake.py).",
        positive,
    )
    edge_handshake_timeout: float = setting(
        10.0,
        "Seconds a new edge connection has for each step of coming in: its TLS handshake, "
        "its websocket upgrade, then its hello. One that takes longer is closed and counted "
        "(/healthz handshakeTimeouts, helloTimeouts). Raise it for links slow to set up "
        "(satellite, 2G).",
        positive,
    )
    node_grace_period: float = setting(
        40.0, "Seconds without contact before a node is marked NotReady.", positive
    )
    edge_ping_interval: float = setting(
        20.0,
        "Seconds an edge's link may stay silent before the hub pings it (anything the edge "
        "sends, its own pings included, counts): a link that stops passing packets without "
        "closing (a NAT that forgot it, a cable pulled) is found this way.",
        positive,
    )
    edge_ping_timeout: float = setting(
        20.0, "Seconds to wait for an edge's pong before its link is closed as dead.", positive
    )
    leader_timeout: float = setting(
        10.0,
        "With several hub replicas on one PostgreSQL (docs/ha.md): seconds after which a "
        "leader that stopped answering (stalled, cut off) loses the lead for fleet-wide "
        "duties (expiry, compaction) to another replica; a replica's database transaction "
        "left idle for three times this is ended by PostgreSQL, so a stalled replica "
        "cannot hold rows the others need.",
        positive,
    )
    rebalance_interval: float = setting(
        15.0,
        "With several hub replicas (docs/ha.md): seconds between a replica's checks that "
        "it serves no more than its share of the nodes; one serving more asks up to 5% of "
        "its nodes per check to reconnect, so nodes spread over replicas that join or return.",
        positive,
    )
    drift_check_interval: float = setting(
        30.0,
        "Seconds between checks that each connected node's cache holds what the hub routed "
        "to it (Synced or Drift on the Node).",
        positive,
    )
    event_retention: float = setting(
        7 * 24 * 3600.0,
        "Seconds the hub keeps apps' uploads (edgeward events); older ones are deleted, "
        "checked every minute.",
        positive,
    )
    history_retention: float = setting(
        7 * 24 * 3600.0,
        "Seconds the hub keeps each reported twin value (edgeward twin history); older "
        "ones are deleted, checked every minute.",
        positive,
    )
    history_max_per_property: int = setting(
        10_000,
        "Reported values the hub keeps per device property at most; the oldest go first. "
        "0 keeps no twin history.",
        non_negative,
    )
    change_log_retention: int = setting(
        100_000,
        "Revisions kept in the change log; an edge further behind gets a full snapshot.",
        positive,
    )
    change_poll_interval: float = setting(
        1.0,
        "Seconds between reads of the change log for writes made through other hub "
        "replicas on the same database: the fallback when a notification is missed. On "
        "PostgreSQL each replica hears the others' commits at once (LISTEN/NOTIFY); on "
        "SQLite this poll is how they are found.",
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

    def api_address(self) -> str:
        return self.api_bind or ("127.0.0.1" if self.insecure else "0.0.0.0")

    def edge_address(self) -> str:
        return self.edge_bind or ("127.0.0.1" if self.insecure else "0.0.0.0")

    def idle_transaction_timeout(self) -> float:
        """How long PostgreSQL lets one of this hub's transactions sit idle before it
        ends the connection (cloudhub.db.open_engine): long enough for a replica slowed
        by a saturated machine (the 30,000-node bench saw 5 to 9 s between two statements),
        short enough that a stalled one frees its row locks soon after it loses the lead."""
        return IDLE_TRANSACTION_LEADER_TIMEOUTS * self.leader_timeout

    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{Path(self.data_dir).resolve() / 'hub.db'}"
