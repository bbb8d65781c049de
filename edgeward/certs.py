"""X.509 and key handling both sides need: node keys and CSRs, the CA pin, private files.

The hub signs (``cloudhub/pki.py``); a gateway makes its own key and asks
(``edgeward join`` and edgecore's renewal). Keys are ECDSA P-256 throughout:
small certificates, fast handshakes on small ARM cores. ``cryptography`` is
imported by the functions that need it, so an edgecore that is not renewing
does not carry it in memory.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: A node certificate's subject CN is the node name; this O marks certificates for nodes.
NODE_ORGANIZATION = "edgeward:nodes"
#: A certificate is renewed once this share of its life has passed.
RENEW_AT = 2 / 3


class CertificateError(Exception):
    """A certificate, key or CSR that cannot be used; the message says why, in one line."""


def new_private_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"not a usable private key: {exc}") from None


def node_csr(key: Any, node: str) -> bytes:
    """A PEM certificate signing request for ``node``, signed by ``key``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, node),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certificate(pem: bytes) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None


def ca_hash(ca_pem: bytes) -> str:
    """The pin a join token carries: the SHA-256 of the CA certificate's DER bytes, in hex."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca_pem.decode("ascii"))).hexdigest()


def validity(pem: bytes) -> tuple[float, float]:
    """(not before, not after) of a certificate, as seconds since the epoch."""
    cert = load_certificate(pem)
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


def renewal_due(pem: bytes) -> float:
    """When a certificate should be renewed: two thirds into its life (epoch seconds)."""
    start, end = validity(pem)
    return start + (end - start) * RENEW_AT


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` so only the owner can read it (0600), replacing ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate or config (0644), replacing ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def decode_certificate_file(path: str | Path) -> dict[str, Any]:
    """A certificate file's subject, serial and dates, the way ``getpeercert()`` shows them.

    The standard library's decoder, so a daemon can read its own certificate
    without importing ``cryptography`` (about 10 MB of memory on a gateway).
    """
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:  # pragma: no cover - every CPython we support has it
        return {}
    try:
        return dict(decode(str(path)))
    except ssl.SSLError as exc:  # the decoder's errors carry only a message, no .reason
        reason = exc.args[0] if exc.args else type(exc).__name__
        raise CertificateError(f"{path} is not a PEM certificate ({reason})") from None


def subject_field(decoded: dict[str, Any], name: str) -> str | None:
    for rdn in decoded.get("subject", ()):
        for key, value in rdn:
            if key == name:
                return str(value)
    return None


def _make_csr_main(argv: list[str]) -> int:
    """``python -m edgeward.certs csr NODE KEY_OUT``: a new key (0600) and its CSR on stdout.

    edgecore renews through this in a child process, so ``cryptography`` never
    enters the daemon's own memory.
    """
    import sys

    if len(argv) != 3 or argv[0] != "csr":
        sys.stderr.write("usage: python -m edgeward.certs csr NODE KEY_OUT\n")
        return 2
    key = new_private_key()
    write_private(Path(argv[2]), private_key_pem(key))
    sys.stdout.write(node_csr(key, argv[1]).decode("ascii"))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_make_csr_main(sys.argv[1:]))
