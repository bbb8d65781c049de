"""The hub's certificates verify under OpenSSL's strict RFC 5280 checks, which Python 3.13
(Debian 13) turns on by default in ssl.create_default_context()."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cloudhub.pki import Authority, init_pki, pki_paths
from edgeward import certs


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str | None) -> None:
    """A TLS handshake in memory; raises what either side's verification raises."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(client_in, client_out, server_hostname=hostname)
    s = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", c), ("server", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def strict_client(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def test_server_and_node_certificates_pass_strict_verification(tmp_path: Path) -> None:
    paths = pki_paths(tmp_path)
    init_pki(paths, ["hub.example"], ["10.0.0.5"])
    authority = Authority(paths)
    # what `edgeward join`, the CLI and edgecore do on Debian 13
    handshake(authority.api_context(), strict_client(paths.ca_cert), "hub.example")

    key = certs.new_private_key()
    signed = authority.sign_node(certs.node_csr(key, "gw-1"), "gw-1", days=30)
    (tmp_path / "node.crt").write_bytes(signed.pem)
    (tmp_path / "node.key").write_bytes(certs.private_key_pem(key))
    edge_port = authority.edge_context()
    edge_port.verify_flags |= ssl.VERIFY_X509_STRICT
    client = strict_client(paths.ca_cert)
    client.load_cert_chain(tmp_path / "node.crt", tmp_path / "node.key")
    handshake(edge_port, client, "10.0.0.5")


def test_a_server_certificate_from_before_is_reissued_with_the_same_names(
    tmp_path: Path,
) -> None:
    """Hubs initialised before the key identifiers were added get a server certificate that
    Python 3.13's clients accept: at init and at the hub's start."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    paths = pki_paths(tmp_path)
    init_pki(paths, ["hub.example"], [])
    ca = certs.load_certificate(paths.ca_cert.read_bytes())
    ca_key = certs.load_private_key(paths.ca_key.read_bytes())
    current = certs.load_certificate(paths.server_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    legacy = (
        x509.CertificateBuilder()
        .subject_name(current.subject)
        .issuer_name(ca.subject)
        .public_key(current.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=300))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    paths.server_cert.write_bytes(legacy.public_bytes(serialization.Encoding.PEM))
    authority = Authority(paths)
    try:
        handshake(authority.api_context(), strict_client(paths.ca_cert), "hub.example")
    except ssl.SSLCertVerificationError as exc:
        assert "Authority Key Identifier" in exc.verify_message
    else:
        raise AssertionError("OpenSSL accepted a certificate without its issuer's key id")

    assert authority.renew_server_if_due() is True
    assert authority.renew_server_if_due() is False
    handshake(authority.api_context(), strict_client(paths.ca_cert), "hub.example")
    renewed = certs.load_certificate(paths.server_cert.read_bytes())
    names = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hub.example" in names.get_values_for_type(x509.DNSName)
