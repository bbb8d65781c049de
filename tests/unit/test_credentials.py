"""Tokens, node certificates, the authorization rule and the audit log, without a server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from cloudhub import credentials
from cloudhub.audit import AuditLog
from cloudhub.authz import Forbidden, check_collection, check_object, check_request
from cloudhub.credentials import Identity, TokenRefused
from cloudhub.db import open_engine
from cloudhub.pki import Authority, init_pki, node_of_peer, pki_paths
from cloudhub.schema import migrate
from edgeward import certs
from edgeward.kinds import DEVICE, DEVICE_MODEL, NODE


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = open_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate(engine)
    return engine


def refusal(conn: Connection, token: str, now: float) -> str:
    with pytest.raises(TokenRefused) as info:
        credentials.check_token(conn, token, now)
    return info.value.reason


def test_a_token_is_stored_hashed_and_checked_until_it_expires(engine: Engine) -> None:
    with engine.begin() as conn:
        token, row = credentials.create_token(conn, "viewer", ttl=60, now=1000.0)
        stored = conn.exec_driver_sql("SELECT secret_sha256 FROM tokens").scalar_one()
        secret = token.split(".")[1]
        assert secret not in stored and len(stored) == 64
        assert credentials.check_token(conn, token, 1059.0) == Identity(
            f"token:{row['id']}", "viewer"
        )
        assert refusal(conn, token, 1060.0) == "expired"
        assert refusal(conn, token.replace(secret, "x" * 26), 1001.0) == "unknown"
        assert refusal(conn, "nonsense", 1001.0) == "malformed"


def test_the_ca_pinned_form_is_accepted_as_a_bearer_token(engine: Engine) -> None:
    with engine.begin() as conn:
        token, _ = credentials.create_token(conn, "admin", ttl=None)
        assert credentials.check_token(conn, "a" * 64 + "." + token).role == "admin"


def test_a_revoked_token_and_a_used_single_use_token_are_refused_by_name(engine: Engine) -> None:
    with engine.begin() as conn:
        revoked, row = credentials.create_token(conn, "node", ttl=60, now=0.0)
        assert credentials.revoke_token(conn, row["id"], 1.0)
        assert refusal(conn, revoked, 2.0) == "revoked"
        assert not credentials.revoke_token(conn, "nosuch", 1.0)
        once, row = credentials.create_token(
            conn, "node", ttl=60, node="gw", single_use=True, now=0
        )
        assert credentials.consume(conn, row["id"], 1.0)
        assert not credentials.consume(conn, row["id"], 2.0)  # a racing second join loses
        assert refusal(conn, once, 3.0) == "used"
        states = {r["id"]: r["state"] for r in credentials.list_tokens(conn, 3.0)}
        assert sorted(states.values()) == ["revoked", "used"]
        assert all("secret" not in json.dumps(r) for r in credentials.list_tokens(conn, 3.0))


def test_a_node_certificate_connects_until_revoked_or_expired(engine: Engine) -> None:
    with engine.begin() as conn:
        credentials.record_certificate(conn, "1f", "gw", not_after=100.0)
        assert credentials.certificate_refusal(conn, "1f", "gw", 50.0) is None
        assert "not issued by this hub for node other" in str(
            credentials.certificate_refusal(conn, "1f", "other", 50.0)
        )
        assert "expired" in str(credentials.certificate_refusal(conn, "1f", "gw", 100.0))
        assert credentials.revoke_node(conn, "gw") == 1
        assert "revoked" in str(credentials.certificate_refusal(conn, "1f", "gw", 50.0))
        assert "not issued" in str(credentials.certificate_refusal(conn, "2a", "gw", 50.0))


def test_the_ca_signs_only_p256_csrs_with_the_name_it_is_given(tmp_path: Path) -> None:
    """The subject comes from the join request, never from the CSR."""
    paths = pki_paths(tmp_path)
    init_pki(paths, ["localhost"], ["127.0.0.1"])
    authority = Authority(paths)
    key = certs.new_private_key()
    signed = authority.sign_node(certs.node_csr(key, "claimed-name"), "gw-1", 1)
    peer = certs.decode_certificate_file(_write(tmp_path / "n.crt", signed.pem))
    assert node_of_peer(peer) == ("gw-1", signed.serial)
    with pytest.raises(certs.CertificateError, match="not a PEM certificate signing request"):
        authority.sign_node(b"junk", "gw-1", 1)
    with pytest.raises(certs.CertificateError, match="node name"):
        authority.sign_node(certs.node_csr(key, "x"), "Bad_Name", 1)
    server = certs.decode_certificate_file(paths.server_cert)
    assert node_of_peer(server) is None  # the hub's own certificate is no node's
    assert stat.S_IMODE(paths.ca_key.stat().st_mode) == 0o600


def test_a_file_that_is_not_a_certificate_is_a_certificate_error(tmp_path: Path) -> None:
    """A damaged or missing node.crt is named, never an AttributeError from the decoder."""
    junk = _write(tmp_path / "node.crt", b"not a certificate\n")
    with pytest.raises(certs.CertificateError, match=r"node.crt is not a PEM certificate \("):
        certs.decode_certificate_file(junk)
    with pytest.raises(certs.CertificateError, match="is not a PEM certificate"):
        certs.decode_certificate_file(tmp_path / "missing.crt")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def device(node: str) -> dict:
    return {"metadata": {"name": "d"}, "spec": {"nodeName": node}}


def test_the_authorization_rule() -> None:
    admin = Identity("token:a", "admin")
    viewer = Identity("token:v", "viewer")
    node = Identity("token:n", "node", "gw")
    check_request(admin, "DELETE", admin_only=True)
    check_request(viewer, "GET")
    for identity, method, admin_only in ((viewer, "POST", False), (node, "GET", True)):
        with pytest.raises(Forbidden):
            check_request(identity, method, admin_only)
    for method in ("GET", "POST"):
        with pytest.raises(Forbidden):
            check_collection(node, method, DEVICE)
    check_collection(viewer, "GET", DEVICE)
    check_object(node, "GET", DEVICE, device("gw"), "d")
    check_object(node, "GET", NODE, {}, "gw")
    check_object(node, "GET", DEVICE_MODEL, {"metadata": {"name": "m"}}, "m")  # every node's
    check_object(node, "PATCH", DEVICE, device("gw"), "d", device("gw"))
    refused = [
        ("GET", DEVICE, device("other"), "d", None),
        ("GET", NODE, {}, "other", None),
        ("DELETE", DEVICE, device("gw"), "d", None),
        ("PATCH", DEVICE, device("gw"), "d", device("other")),
        ("PUT", DEVICE_MODEL, {"metadata": {"name": "m"}}, "m", {"metadata": {"name": "m"}}),
    ]
    for method, kind, current, name, new in refused:
        with pytest.raises(Forbidden):
            check_object(node, method, kind, current, name, new)


def test_the_audit_log_is_json_lines_rotated_by_size(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=2000, backups=2)
    who = Identity("token:abc", "node", "gw")
    for i in range(100):
        log.record(who, "PATCH", f"/api/v1/nodes/n{i}", 200, "10.0.0.7")
    log.record(who, "GET", "/api/v1/nodes", 403, reason="x" * 2000)
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    last = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert last["identity"] == "token:abc" and last["node"] == "gw" and last["outcome"] == 403
    assert len(last["reason"]) == 500
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())


def test_a_join_revokes_the_certificates_of_the_nodes_earlier_joins(tmp_path: Path) -> None:
    """Joining a name again (a replaced gateway) locks the old key out; a renewal does not."""
    from cloudhub.joining import JoinService, JoinSettings
    from cloudhub.store import Store

    paths = pki_paths(tmp_path / "hub")
    init_pki(paths, ["localhost"], ["127.0.0.1"])
    store = Store(open_engine(f"sqlite:///{tmp_path / 'hub.db'}"))
    store.migrate()
    service = JoinService(store, Authority(paths), JoinSettings(1, 10000, ()), lambda _n: False)

    def join_once() -> str:
        with store.writing() as tx:
            token, _ = credentials.create_token(tx.conn, "node", ttl=60, node="gw")
        csr = certs.node_csr(certs.new_private_key(), "gw").decode()
        answer = service.join(token, "gw", csr, "hub.example:10002")
        assert answer["edgeEndpoints"] == ["wss://hub.example:10000"]
        peer = certs.decode_certificate_file(
            _write(tmp_path / "c.crt", answer["certificate"].encode())
        )
        found = node_of_peer(peer)
        assert found is not None
        return found[1]

    first = join_once()
    renewed = service.renew("gw", certs.node_csr(certs.new_private_key(), "gw").decode())
    assert "BEGIN CERTIFICATE" in renewed
    with store.reading() as conn:
        assert credentials.certificate_refusal(conn, first, "gw") is None  # renewal kept it
    second = join_once()
    with store.reading() as conn:
        assert "revoked" in str(credentials.certificate_refusal(conn, first, "gw"))
        assert credentials.certificate_refusal(conn, second, "gw") is None


class _Conn:
    remote_address = ("10.0.0.9", 4242)

    def respond(self, status: int, text: str) -> tuple[int, str]:
        return status, text


def test_a_client_refused_in_a_loop_is_logged_once_a_minute_and_audited_every_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cloudhub.edgegate import EdgeGate

    now = [0.0]
    audit = AuditLog(tmp_path / "audit.log")
    gate = EdgeGate(None, audit, clock=lambda: now[0])  # type: ignore[arg-type]
    who = Identity("certificate:1f", "node", "gw")
    with caplog.at_level("WARNING", logger="cloudhub.edgegate"):
        for _ in range(50):
            assert gate._refuse(_Conn(), who, "10.0.0.9:4242", "revoked")[0] == 403
            now[0] += 1.0
        now[0] += 60
        gate._refuse(_Conn(), who, "10.0.0.9:4242", "revoked")
    audit.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[1].endswith("revoked (49 more since the last line)")
    assert gate.refused == 51
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 51
