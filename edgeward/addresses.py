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
