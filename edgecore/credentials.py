"""The node's TLS credentials on disk: checked at start-up, used per connection, renewed.

Files (paths from ``hub.ca_file``/``cert_file``/``key_file``, by default under
``<data_dir>/pki/``): the hub's CA, the node certificate and its key. A renewal
writes ``<key>.next`` (by a child process, so ``cryptography`` never enters
edgecore's memory), gets the certificate over the hub link, writes
``<cert>.next``, then renames the key and the certificate into place; start-up
finishes a renewal a crash interrupted between those renames, or drops one
that had no certificate yet. The old pair stays valid at the hub until it
expires, so a crash at any point leaves a pair that connects.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from pathlib import Path

from edgecore.config import HubLinkConfig
from edgeward import certs
from edgeward.certs import CertificateError
from edgeward.errors import ConfigError

REJOIN = (
    "join again with a new token (the cache and outbox are kept): "
    "edgeward join --hub https://HUB:10002 --token TOKEN --node {node}"
)


def _next(path: str) -> Path:
    return Path(path + ".next")


def finish_interrupted_renewal(config: HubLinkConfig) -> None:
    key_next, cert_next = _next(config.key_file), _next(config.cert_file)
    if cert_next.exists():
        if key_next.exists():
            os.replace(key_next, config.key_file)
        os.replace(cert_next, config.cert_file)
    elif key_next.exists():
        key_next.unlink()  # the hub never answered: the old pair is still the one


def check_credentials(config: HubLinkConfig, node: str) -> None:
    """ConfigError with the one thing to do when the node cannot authenticate."""
    try:
        finish_interrupted_renewal(config)
    except OSError as exc:
        raise ConfigError([f"cannot finish a certificate renewal: {exc}"]) from None
    rejoin = REJOIN.format(node=node)
    for what, path in (
        ("the hub's CA certificate", config.ca_file),
        ("this node's certificate", config.cert_file),
        ("this node's key", config.key_file),
    ):
        if not os.access(path, os.R_OK):
            missing = "missing" if not Path(path).exists() else "not readable by this user"
            raise ConfigError(
                [
                    f"{what} at {path} is {missing}: join this node to a hub first "
                    f"(edgeward join --hub https://HUB:10002 --token TOKEN --node {node}), "
                    "or set hub.insecure for a hub run --insecure"
                ]
            )
    try:
        decoded = certs.decode_certificate_file(config.cert_file)
    except CertificateError as exc:
        raise ConfigError([f"{exc}; {rejoin}"]) from None
    named = certs.subject_field(decoded, "commonName")
    if decoded and named != node:
        raise ConfigError(
            [
                f"the certificate at {config.cert_file} is for node {named}, not {node}: "
                f"set node_name to {named}, or {rejoin}"
            ]
        )
    not_after = not_after_of(decoded)
    if not_after is not None and not_after <= time.time():
        raise ConfigError([f"this node's certificate expired at {certs.utc(not_after)}; {rejoin}"])


def not_after_of(decoded: dict) -> float | None:
    text = decoded.get("notAfter")
    return ssl.cert_time_to_seconds(text) if text else None


def expired_message(config: HubLinkConfig, node: str) -> str | None:
    """Why this node cannot connect any more because its certificate expired, or None.

    A hub refuses an expired certificate in the TLS handshake, which the client
    sees only as a closed connection (TLS 1.3 verifies the client after the
    handshake completes): without this check it would retry forever.
    """
    try:
        not_after = not_after_of(certs.decode_certificate_file(config.cert_file))
    except (CertificateError, OSError):
        return None  # the connection attempt reports what is wrong with the file
    if not_after is None or not_after > time.time():
        return None
    return f"this node's certificate expired at {certs.utc(not_after)}; {REJOIN.format(node=node)}"


def renewal_due(config: HubLinkConfig) -> float | None:
    """When the node certificate should be renewed (two thirds into its life), if known."""
    try:
        decoded = certs.decode_certificate_file(config.cert_file)
    except (CertificateError, OSError):
        return None
    start, end = decoded.get("notBefore"), decoded.get("notAfter")
    if not start or not end:
        return None
    begin, finish = ssl.cert_time_to_seconds(start), ssl.cert_time_to_seconds(end)
    return begin + (finish - begin) * certs.RENEW_AT


def client_context(config: HubLinkConfig) -> ssl.SSLContext:
    """TLS to the hub: TLS 1.2+, the hub verified against its CA, this node's certificate.

    Made per connection, so a renewed certificate is used from the next one on.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.cert_file, config.key_file)
    return ctx


async def new_csr(config: HubLinkConfig, node: str) -> str:
    """A fresh key in ``<key>.next`` and its CSR, made by a child process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgeward.certs",
        "csr",
        node,
        str(_next(config.key_file)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise CertificateError(f"making a CSR failed: {err.decode(errors='replace').strip()[:300]}")
    return out.decode("ascii")


def install(config: HubLinkConfig, cert_pem: str, node: str) -> float:
    """Put a renewed certificate (for the key in ``<key>.next``) in place; its expiry."""
    cert_next = _next(config.cert_file)
    certs.write_public(cert_next, cert_pem.encode("ascii"))
    decoded = certs.decode_certificate_file(cert_next)
    if certs.subject_field(decoded, "commonName") != node:
        cert_next.unlink()
        raise CertificateError("the hub sent a certificate for another node")
    try:
        ssl.create_default_context().load_cert_chain(cert_next, _next(config.key_file))
    except ssl.SSLError:
        cert_next.unlink()
        raise CertificateError(
            "the hub sent a certificate that does not match the new key"
        ) from None
    os.replace(_next(config.key_file), config.key_file)
    os.replace(cert_next, config.cert_file)
    return not_after_of(decoded) or 0.0
