"""The hub's certificate authority: its files, the certificates it signs, the TLS it serves.

Every certificate decision of the hub is here. Files, under ``<data_dir>/pki/``::

    ca.crt  ca.key           the fleet's CA (ECDSA P-256, 10 years); never replaced
    server.crt server.key    the hub's serving certificate, for the names init was given

Node certificates carry the node name as subject CN and ``edgeward:nodes`` as O,
are valid for client authentication only, and are recorded by serial in the
database (``cloudhub/credentials.py``): a certificate the hub did not record, or
revoked (its Node was deleted), is refused at the handshake even though the CA
signed it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeward import certs
from edgeward.certs import NODE_ORGANIZATION, CertificateError
from edgeward.errors import ConfigError
from edgeward.kinds import dns_subdomain_problem

CA_DAYS = 3650
SERVER_DAYS = 365
CA_NAME = "edgeward-ca"
SERVER_NAME = "cloudhub"
#: Backdating covers clocks a little behind the hub's (a gateway without RTC after boot).
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class PkiPaths:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"


def pki_paths(data_dir: str | Path) -> PkiPaths:
    return PkiPaths(Path(data_dir) / "pki")


@dataclass(frozen=True)
class SignedNode:
    pem: bytes
    serial: str
    not_after: float


class Authority:
    """The loaded CA: signs node certificates and builds the hub's TLS contexts."""

    def __init__(self, paths: PkiPaths) -> None:
        self.paths = paths
        try:
            self.ca_pem = paths.ca_cert.read_bytes()
            self._ca_key = certs.load_private_key(paths.ca_key.read_bytes())
            self._ca = certs.load_certificate(self.ca_pem)
        except FileNotFoundError as exc:
            raise ConfigError(
                [
                    f"no hub CA at {exc.filename}: run 'cloudhub init --data-dir "
                    f"{paths.directory.parent}' first, or pass --insecure for a local "
                    "experiment without TLS"
                ]
            ) from None
        except (OSError, CertificateError) as exc:
            raise ConfigError([f"cannot load the hub CA from {paths.directory}: {exc}"]) from None
        self.ca_hash = certs.ca_hash(self.ca_pem)

    def sign_node(self, csr_pem: bytes, node: str, days: float) -> SignedNode:
        """A client certificate for ``node`` from its CSR; CertificateError when unusable.

        Only the CSR's public key is used: the name comes from the (authorised)
        request, never from the CSR's subject.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        problem = dns_subdomain_problem(node)
        if problem is not None:
            raise CertificateError(f'node name "{node}" {problem}')
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CertificateError(f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise CertificateError("the CSR's signature does not match its key")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise CertificateError("the CSR's key must be ECDSA P-256")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, node),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        end = now + dt.timedelta(days=days)
        backdate = min(BACKDATE, dt.timedelta(days=days) / 10)  # renewal is due by the dates
        builder = (
            _builder(subject, self._ca.subject, key, now - backdate, end, self._ca.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        cert = _sign(builder, self._ca_key)
        return SignedNode(_pem(cert), serial_hex(cert.serial_number), end.timestamp())

    def edge_context(self) -> ssl.SSLContext:
        """TLS for the edge endpoint: TLS 1.2+, a client certificate from this CA required,
        and no TLS 1.3 session tickets: edgecore never resumes a session, and the two
        tickets OpenSSL sends by default (each the session, client certificate included,
        encrypted) were a quarter of the hub's CPU per handshake, paid 10,000 times over
        when a fleet reconnects."""
        ctx = self._server_context()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        ctx.num_tickets = 0
        return ctx

    def api_context(self) -> ssl.SSLContext:
        """TLS for the REST API: TLS 1.2+; callers authenticate with bearer tokens."""
        return self._server_context()

    def _server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.paths.server_cert, self.paths.server_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [f"cannot load the hub's server certificate from {self.paths.directory}: {exc}"]
            ) from None
        return ctx

    def renew_server_if_due(self) -> bool:
        """Re-issue the serving certificate, same names, once two thirds of its life passed."""
        pem = self.paths.server_cert.read_bytes()
        due = certs.renewal_due(pem) <= dt.datetime.now(dt.UTC).timestamp()
        if not due and _has_authority_key_id(pem):
            return False
        from cryptography import x509

        cert = certs.load_certificate(pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        _issue_server(self.paths, self._ca, self._ca_key, list(names))
        return True


def node_of_peer(peercert: dict[str, Any] | None) -> tuple[str, str] | None:
    """(node name, serial) of a verified node client certificate; None for any other."""
    if not peercert:
        return None
    fields: dict[str, str] = {}
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            fields[key] = value
    node = fields.get("commonName")
    if fields.get("organizationName") != NODE_ORGANIZATION or not node:
        return None
    serial = peercert.get("serialNumber")
    if not isinstance(serial, str):
        return None
    return node, serial_hex(int(serial, 16))


def serial_hex(serial: int) -> str:
    return format(serial, "x")


@dataclass(frozen=True)
class InitResult:
    created: list[str]
    kept: list[str]


def init_pki(paths: PkiPaths, hostnames: list[str], ips: list[str]) -> InitResult:
    """Create the CA and the server certificate where missing; never replace the CA.

    A server certificate that lacks one of the names asked for is re-issued by
    the same CA (the way to add a name later).
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    paths.directory.mkdir(parents=True, exist_ok=True)
    paths.directory.chmod(0o700)
    created, kept = [], []
    if paths.ca_cert.exists() or paths.ca_key.exists():
        if not (paths.ca_cert.exists() and paths.ca_key.exists()):
            missing = paths.ca_key if paths.ca_cert.exists() else paths.ca_cert
            raise ConfigError(
                [f"{missing} is missing but its pair exists; restore it from a backup"]
            )
        ca_key = certs.load_private_key(paths.ca_key.read_bytes())
        ca = certs.load_certificate(paths.ca_cert.read_bytes())
        kept.append(f"CA {paths.ca_cert} (sha256:{certs.ca_hash(paths.ca_cert.read_bytes())})")
    else:
        ca_key = certs.new_private_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = dt.datetime.now(dt.UTC)
        builder = (
            _builder(
                name,
                name,
                ca_key.public_key(),
                now - BACKDATE,
                now + dt.timedelta(CA_DAYS),
                ca_key.public_key(),
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        ca = _sign(builder, ca_key)
        certs.write_private(paths.ca_key, certs.private_key_pem(ca_key))
        certs.write_public(paths.ca_cert, _pem(ca))
        created.append(f"CA {paths.ca_cert} (sha256:{certs.ca_hash(_pem(ca))})")
    wanted = _san_names(hostnames, ips)
    have = _server_names(paths)
    current = have is not None and _has_authority_key_id(paths.server_cert.read_bytes())
    if current and have is not None and {str(n.value) for n in wanted} <= have:
        kept.append(f"server certificate {paths.server_cert} for {', '.join(sorted(have))}")
    else:
        if have:
            wanted = _merge(wanted, have)
        _issue_server(paths, ca, ca_key, wanted)
        names = ", ".join(sorted(str(n.value) for n in wanted))
        created.append(f"server certificate {paths.server_cert} for {names}")
    return InitResult(created, kept)


def default_hostnames() -> list[str]:
    names = ["localhost"]
    host = socket.gethostname()
    if host and host not in names and dns_subdomain_problem(host.lower()) is None:
        names.append(host.lower())
    return names


def _san_names(hostnames: list[str], ips: list[str]) -> list[Any]:
    from cryptography import x509

    names: list[Any] = []
    for host in hostnames:
        problem = dns_subdomain_problem(host)
        if problem is not None:
            raise ConfigError([f'--hostname "{host}": {problem}'])
        names.append(x509.DNSName(host))
    for ip in ips:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise ConfigError([f'--ip "{ip}" is not an IP address']) from None
    return names


def _server_names(paths: PkiPaths) -> set[str] | None:
    if not (paths.server_cert.exists() and paths.server_key.exists()):
        return None
    from cryptography import x509

    cert = certs.load_certificate(paths.server_cert.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name.value) for name in sans}


def _merge(wanted: list[Any], have: set[str]) -> list[Any]:
    hosts = [n for n in have if not _is_ip(n)]
    ips = [n for n in have if _is_ip(n)]
    old = _san_names(hosts, ips)
    seen = {str(n.value) for n in wanted}
    return wanted + [n for n in old if str(n.value) not in seen]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _issue_server(paths: PkiPaths, ca: Any, ca_key: Any, names: list[Any]) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = certs.new_private_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        _builder(
            subject,
            ca.subject,
            key.public_key(),
            now - BACKDATE,
            now + dt.timedelta(SERVER_DAYS),
            ca.public_key(),
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    cert = _sign(builder, ca_key)
    certs.write_private(paths.server_key, certs.private_key_pem(key))
    certs.write_public(paths.server_cert, _pem(cert))


def _builder(subject: Any, issuer: Any, key: Any, start: Any, end: Any, issuer_key: Any) -> Any:
    """A certificate with both key identifiers: Python 3.13 verifies with
    VERIFY_X509_STRICT by default, which refuses a certificate without its
    issuer's (Authority) key identifier."""
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(secrets.randbits(127) | 1)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False
        )
    )


def _has_authority_key_id(pem: bytes) -> bool:
    """Issued by this version's rules: hubs initialised before 0.1.0 lack it."""
    from cryptography import x509

    try:
        certs.load_certificate(pem).extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return False
    return True


def _sign(builder: Any, key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return builder.sign(key, hashes.SHA256())


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)
