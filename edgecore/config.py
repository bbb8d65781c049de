"""The edge daemon's configuration tree: defaults, documentation and checks in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeward.addresses import is_loopback, parse_broker_url, parse_listen
from edgeward.configfile import non_negative, one_of, port_number, positive, setting
from edgeward.errors import ConfigError
from edgeward.kinds import dns_label_problem, dns_subdomain_problem

LOG_LEVELS = ("debug", "info", "warning", "error")


def _endpoints(value: tuple[str, ...]) -> str | None:
    if not value:
        return "must list at least one hub endpoint"
    for url in value:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            return f'"{url}" is not a ws:// or wss:// URL'
    return None


def _node_name(value: str) -> str | None:
    if value == "":
        return None  # the machine's hostname, checked at start-up
    problem = dns_subdomain_problem(value)
    return None if problem is None else f"{problem} (a DNS-1123 subdomain, e.g. edge-1)"


@dataclass(frozen=True)
class HubLinkConfig:
    endpoints: tuple[str, ...] = setting(
        ("wss://127.0.0.1:10000",),
        "Hub edge endpoints, tried in turn until one answers ('edgeward join' writes them).",
        _endpoints,
    )
    ca_file: str = setting(
        "", "The hub's CA certificate, to verify the hub. Empty: <data_dir>/pki/ca.crt."
    )
    cert_file: str = setting(
        "",
        "This node's certificate (renewed in place before it expires). "
        "Empty: <data_dir>/pki/node.crt.",
    )
    key_file: str = setting(
        "",
        "This node's private key (0600; it never leaves the node). Empty: <data_dir>/pki/node.key.",
    )
    insecure: bool = setting(
        False,
        "Allow ws:// endpoints: no TLS and no certificate, only for a hub run --insecure "
        "on a machine you trust.",
    )
    reconnect_initial_delay: float = setting(
        0.5, "First reconnect delay in seconds; it doubles per failure, with full jitter.", positive
    )
    reconnect_max_delay: float = setting(30.0, "Cap of the reconnect delay, in seconds.", positive)
    ping_interval: float = setting(
        20.0, "Seconds between websocket pings that check the link is alive.", positive
    )
    ping_timeout: float = setting(
        20.0, "Seconds to wait for a pong before the link is declared dead.", positive
    )
    open_timeout: float = setting(10.0, "Seconds allowed to open the connection.", positive)
    outage_min_seconds: float = setting(
        10.0,
        "Time alone shorter than this many seconds (a reconnect, a hub restart) is not "
        "reported to the hub as an outage (the Node's status.outages). 0 reports every one.",
        non_negative,
    )

    def problems(self) -> list[str]:
        found = []
        if self.reconnect_max_delay < self.reconnect_initial_delay:
            found.append("reconnect_max_delay: must not be less than reconnect_initial_delay")
        plain = [url for url in self.endpoints if url.startswith("ws://")]
        if plain and not self.insecure:
            found.append(
                f'endpoints: "{plain[0]}" is plain ws://, with no TLS: use the wss:// endpoint '
                "'edgeward join' wrote, or set hub.insecure (--insecure) for a hub run --insecure"
            )
        return found

    def with_files_in(self, data_dir: str) -> HubLinkConfig:
        """This config with empty certificate paths resolved under ``data_dir``/pki."""
        pki = Path(data_dir) / "pki"
        return dataclasses.replace(
            self,
            ca_file=self.ca_file or str(pki / "ca.crt"),
            cert_file=self.cert_file or str(pki / "node.crt"),
            key_file=self.key_file or str(pki / "node.key"),
        )

    @property
    def uses_tls(self) -> bool:
        return any(url.startswith("wss://") for url in self.endpoints)


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = setting(True, "Bridge device mappers over MQTT (the device twin protocol).")
    broker: str = setting(
        "",
        "The broker as KubeEdge writes it: tcp://HOST:PORT, ssl://HOST:PORT, mqtt://, mqtts:// "
        "or HOST:PORT. When set it gives host and port, and ssl:// and mqtts:// turn on tls; "
        "set it or host and port, not both.",
    )
    host: str = setting("127.0.0.1", "Address of the MQTT broker the mappers use.")
    port: int = setting(1883, "Port of the MQTT broker.", port_number)
    tls: bool = setting(
        False,
        "Connect to the broker over TLS, verified with tls_ca_file or, without one, the "
        "system's CAs. Setting tls_ca_file turns it on too.",
    )
    username: str = setting("", "User name for the broker; empty: connect anonymously.")
    password_file: str = setting(
        "", "File holding the broker password (kept out of this config on purpose)."
    )
    client_id: str = setting(
        "",
        "MQTT client id of the subscribing session. Empty: edgecore-<node name>. Replies go "
        "out as <client id>-pub. Both must be unique on the broker.",
    )
    bare_id_namespace: str = setting(
        "default",
        "Namespace of the devices a mapper may name by their name alone "
        "($hw/events/device/<name>/..., as KubeEdge configured mappers up to 1.16); empty: "
        "only namespaced ids.",
        lambda v: None if v == "" else dns_label_problem(v),
    )
    keepalive: int = setting(30, "Seconds between MQTT keepalive pings.", positive)
    tls_ca_file: str = setting("", "CA bundle to verify the broker with; set to use TLS.")
    tls_cert_file: str = setting("", "Client certificate for the broker (with tls_key_file).")
    tls_key_file: str = setting("", "Private key of tls_cert_file.")
    reconnect_initial_delay: float = setting(
        0.5, "First reconnect delay in seconds; it doubles per failure, with full jitter.", positive
    )
    reconnect_max_delay: float = setting(30.0, "Cap of the reconnect delay, in seconds.", positive)

    def problems(self) -> list[str]:
        found = []
        if self.reconnect_max_delay < self.reconnect_initial_delay:
            found.append("reconnect_max_delay: must not be less than reconnect_initial_delay")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            found.append("tls_cert_file and tls_key_file: set both or neither")
        if self.tls_cert_file and not self.tls_ca_file:
            found.append("tls_ca_file: required when a client certificate is set")
        return found

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca_file)


def expand_broker(section: Any, where: str) -> None:
    """Turn a broker URL in an ``mqtt`` section (from the file or --mqtt) into the host,
    port and tls it stands for; ConfigError with one line when it is not one, or clashes."""
    if not isinstance(section, dict) or not isinstance(section.get("broker"), str):
        return
    text = section.pop("broker")
    if not text:
        return
    try:
        address = parse_broker_url(text)
    except ValueError as exc:
        raise ConfigError([f"{where}: {exc}"]) from None
    clash = [f"mqtt.{k}" for k in ("host", "port") if k in section]
    if clash:
        raise ConfigError([f"{where}: set it or {' and '.join(clash)}, not both"])
    if address.tls is False and (section.get("tls") or section.get("tls_ca_file")):
        raise ConfigError(
            [f"{where}: {text} is a broker without TLS, but TLS is set: use ssl:// or mqtts://"]
        )
    section.update(host=address.host, port=address.port)
    if address.tls is not None:
        section["tls"] = address.tls


@dataclass(frozen=True)
class OutboxConfig:
    quota_mb: float = setting(
        256.0,
        "Disk the outbox may take for reports not yet delivered, in MiB. Past it the oldest "
        "events (uploads) are deleted unsent, counted; the latest state of every twin, device "
        "and the node is always kept.",
        positive,
    )
    event_ttl: float = setting(
        7 * 24 * 3600.0,
        "Seconds an event (an upload) waits for the hub before it expires unsent, counted.",
        positive,
    )

    @property
    def quota_bytes(self) -> int:
        return int(self.quota_mb * 2**20)


def _listen(value: str) -> str | None:
    if value == "":
        return None  # off
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = setting(
        "",
        "Serve Prometheus metrics at http://<listen>/metrics: PORT (on 127.0.0.1), "
        "IP:PORT or [IPV6]:PORT. Empty: off.",
        _listen,
    )
    allow_remote: bool = setting(
        False,
        "Allow a listen address other than loopback. The metrics are served without TLS or "
        "token, to anyone who reaches the address.",
    )

    def problems(self) -> list[str]:
        address = self.address
        if address is not None and not is_loopback(address[0]) and not self.allow_remote:
            return [
                f'listen: "{self.listen}" is not a loopback address, and the metrics are '
                "served without TLS or token: set metrics.allow_remote to serve them beyond "
                "this machine"
            ]
        return []

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on; None when metrics are off."""
        return parse_listen(self.listen) if self.listen else None


def _socket_path(value: str) -> str | None:
    if not value.startswith("/"):
        return "must be an absolute path"
    if len(value.encode()) > 107:
        return "must be at most 107 bytes (a unix socket path's limit)"
    return None


@dataclass(frozen=True)
class DmiConfig:
    enabled: bool = setting(
        False,
        "Serve KubeEdge's DMI (gRPC) to mappers made with its mapper-framework; off: gRPC "
        "is not even loaded (docs/dmi.md has its memory cost).",
    )
    socket: str = setting(
        "/etc/kubeedge/dmi.sock",
        "Unix socket DeviceManagerService is served on (KubeEdge's default path).",
        _socket_path,
    )


@dataclass(frozen=True)
class EdgeConfig:
    node_name: str = setting("", "This node's name. Empty: the machine's hostname.", _node_name)
    data_dir: str = setting(
        "/var/lib/edgeward/edge", "Directory of the local cache (edge.db) and outbox."
    )
    status_interval: float = setting(
        10.0, "Seconds between node status reports (CPU, memory, disk) to the hub.", positive
    )
    log_level: str = setting("info", "One of debug, info, warning, error.", one_of(*LOG_LEVELS))
    hub: HubLinkConfig = setting(HubLinkConfig(), "The link to the hub.")
    mqtt: MqttConfig = setting(MqttConfig(), "The MQTT broker device mappers talk to.")
    outbox: OutboxConfig = setting(
        OutboxConfig(), "Reports waiting for the hub: what the edge keeps during an outage."
    )
    metrics: MetricsConfig = setting(
        MetricsConfig(),
        "Prometheus metrics on a local HTTP port (docs/metrics.md), off by default.",
    )
    dmi: DmiConfig = setting(
        DmiConfig(), "KubeEdge's gRPC mapper interface (docs/dmi.md), off by default."
    )
