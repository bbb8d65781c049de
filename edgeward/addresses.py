"""Addresses given on command lines and in config files, parsed without heavy imports.

A broker is written as KubeEdge's configs and mappers write it: ``tcp://host:port`` and
``ssl://host:port`` (edgecore's ``mqttServerExternal``, the mappers' configs, Eclipse
Paho's URLs), ``mqtt://`` and ``mqtts://`` (the MQTT URI schemes), or a bare
``host[:port]``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Schemes of a broker without TLS, and with it; each with its default port.
PLAIN_SCHEMES = {"tcp": 1883, "mqtt": 1883}
TLS_SCHEMES = {"ssl": 8883, "mqtts": 8883, "tls": 8883}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    #: What the scheme says: True for ssl://, mqtts:// and tls://, False for tcp:// and
    #: mqtt://, None for a bare host[:port] (the TLS settings decide).
    tls: bool | None = None


def parse_broker_url(text: str, default_port: int = 1883) -> BrokerAddress:
    """A broker URL or ``host[:port]``; ValueError with a one-line reason when it is not one."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        return BrokerAddress(*_host_port(text, text, default_port))
    name = scheme.lower()
    if name in PLAIN_SCHEMES:
        tls, port = False, PLAIN_SCHEMES[name]
    elif name in TLS_SCHEMES:
        tls, port = True, TLS_SCHEMES[name]
    else:
        raise ValueError(
            f"unsupported broker scheme {scheme!r} in {text!r}: use tcp://, ssl://, mqtt:// "
            "or mqtts:// (or HOST:PORT)"
        )
    if "@" in rest:
        raise ValueError(
            f"bad broker address {text!r}: a user name or password does not go in the URL "
            "(set mqtt.username and mqtt.password_file)"
        )
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#"):
        raise ValueError(f"bad broker address {text!r}: expected {scheme}://HOST[:PORT]")
    if rest.count(":") > 1 and not rest.startswith("["):
        raise ValueError(
            f"bad broker address {text!r}: expected {scheme}://HOST[:PORT] "
            "(an IPv6 address in brackets)"
        )
    host, number = _host_port(rest, text, port)
    return BrokerAddress(host, number, tls)


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``"host:port"``, ``"host"``, ``"[::1]:1883"``, ``"tcp://host:port"`` or
    ``"mqtt://host:port"`` → ``(host, port)`` of a broker without TLS; ValueError if bad."""
    address = parse_broker_url(text, default_port)
    if address.tls:
        raise ValueError(f"{text!r} is a TLS broker: this client connects without TLS")
    return address.host, address.port


def _host_port(text: str, whole: str, default_port: int) -> tuple[str, int]:
    port: str | int = default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad broker address {whole!r}: expected [IPV6]:PORT")
        if rest:
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text  # no port, or a bare IPv6 address
    if not host or not host.isprintable() or any(c.isspace() for c in host):
        raise ValueError(f"bad broker address {whole!r}: expected HOST:PORT")
    if not str(port).isdigit():
        raise ValueError(f"bad broker port in {whole!r}")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"bad broker port in {whole!r}")
    return host, number


def parse_listen(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Where a server listens: ``"PORT"`` (on ``default_host``), ``"HOST:PORT"`` or
    ``"[IPV6]:PORT"`` → ``(host, port)``; port 0 picks a free one. ValueError if bad.

    The host must be an IP address or ``localhost`` (127.0.0.1): a name would need a DNS
    lookup at start-up, and whether it is loopback could change with the answer."""
    import ipaddress

    text = text.strip()
    if text.isdigit():
        host, port = default_host, text
    elif text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [IPV6]:PORT")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        raise ValueError(f"{text!r} is not PORT, HOST:PORT or [IPV6]:PORT")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} in {text!r} is not an IP address (or localhost)") from None
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"the port in {text!r} is not a number from 0 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address) is on the loopback interface only."""
    import ipaddress

    return ipaddress.ip_address(host).is_loopback
