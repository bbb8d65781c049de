"""Addresses given on command lines and in config files, parsed without heavy imports."""

from __future__ import annotations


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``"host:port"``, ``"host"`` or ``"[::1]:1883"`` → ``(host, port)``; ValueError if bad."""
    port: str | int = default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad broker address {text!r}: expected [IPV6]:PORT")
        if rest:
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text  # no port, or a bare IPv6 address
    if not host:
        raise ValueError(f"bad broker address {text!r}: expected HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad broker port in {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad broker port in {text!r}")
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
