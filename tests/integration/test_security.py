"""Init, join, mutual TLS, renewal, revocation and the node-scoped rules, with real processes.

Hostile peers (no certificate, another CA, floods, handshakes that never end)
are in test_hostile_peers.py; the CLI's config and token commands in
test_cli_security.py.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeward import certs
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import BIN, Edge, Hub, wait_for

NS = "/api/v1/namespaces/default"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout
    )


def new_token(hub: Hub, **fields: Any) -> str:
    status, body = hub.request("POST", "/api/v1/tokens", {"role": "node", **fields})
    assert status == 201, body
    return str(body["token"])


def join(hub: Hub, token: str, node: str, base: Path) -> subprocess.CompletedProcess[str]:
    return run(
        "edgeward",
        "join",
        "--hub",
        hub.api,
        "--token",
        token,
        "--node",
        node,
        "--data-dir",
        str(base / node),
        "--config-out",
        str(base / f"{node}.yaml"),
    )


def joined_edge(hub: Hub, node: str, base: Path, *extra: str) -> Edge:
    """A node joined with a fresh single-use token, its edgecore not started yet."""
    done = join(hub, new_token(hub, node=node), node, base)
    assert done.returncode == 0, done.stderr
    edge = Edge(base / node, node, hub.edge, *extra)
    edge.args = ["--config", str(base / f"{node}.yaml"), *extra]
    return edge


def node_ready(hub: Hub, node: str) -> bool:
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    if status != 200:
        return False
    conditions = body.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def audit(hub: Hub) -> list[dict[str, Any]]:
    path = hub.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("secure")
    hub = Hub(base / "hub", "--node-grace-period", "3", secure=True)
    hub.start()
    try:
        yield hub
    finally:
        hub.kill()


# -- init ----------------------------------------------------------------------------


def test_init_writes_a_ca_a_server_certificate_and_an_admin_config(tmp_path: Path) -> None:
    """Keys and the admin config are 0600; the CA is P-256; running init again keeps the CA
    and says so; a new --hostname re-issues the server certificate from the same CA."""
    data = tmp_path / "hub"
    first = run("cloudhub", "init", "--data-dir", str(data), "--hostname", "hub.example")
    assert first.returncode == 0, first.stderr
    assert "created CA" in first.stdout and "created admin credential" in first.stdout
    pki = data / "pki"
    for private in (pki / "ca.key", pki / "server.key", data / "admin.yaml"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    ca_pem = (pki / "ca.crt").read_bytes()
    ca = certs.load_certificate(ca_pem)
    assert ca.public_key().curve.name == "secp256r1"
    admin = yaml.safe_load((data / "admin.yaml").read_text())
    assert admin["hub"] == "https://hub.example:10002"
    assert admin["ca"].encode() == ca_pem
    assert admin["token"].startswith(certs.ca_hash(ca_pem) + ".")

    again = run("cloudhub", "init", "--data-dir", str(data), "--hostname", "hub.example")
    assert again.returncode == 0
    assert "kept    CA" in again.stdout and "created" not in again.stdout
    assert (pki / "ca.crt").read_bytes() == ca_pem

    more = run("cloudhub", "init", "--data-dir", str(data), "--hostname", "other.example")
    assert more.returncode == 0
    assert "created server certificate" in more.stdout
    assert (pki / "ca.crt").read_bytes() == ca_pem
    names = certs.decode_certificate_file(pki / "server.crt")["subjectAltName"]
    assert ("DNS", "hub.example") in names and ("DNS", "other.example") in names


def test_a_hub_without_init_refuses_to_start_unless_insecure(tmp_path: Path) -> None:
    done = run("cloudhub", "--data-dir", str(tmp_path / "h"), "--api-port", "0")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "run 'cloudhub init --data-dir" in done.stderr and "--insecure" in done.stderr


def test_each_listener_binds_its_own_address(tmp_path: Path) -> None:
    """The edge port can face the network while the API stays on another address."""
    hub = Hub(tmp_path / "hub", "--api-bind", "127.0.0.2", "--edge-bind", "127.0.0.1")
    hub.start()
    try:
        assert hub.api.startswith("http://127.0.0.2:") and hub.edge.startswith("ws://127.0.0.1:")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", hub.api_port), timeout=5).close()
    finally:
        hub.kill()


# -- join and mutual TLS -------------------------------------------------------------


def test_a_joined_node_syncs_over_mutual_tls(hub: Hub, tmp_path: Path) -> None:
    """token → join → edgecore --config: the node is Ready and gets its device."""
    token = new_token(hub, node="gw-sync")
    done = join(hub, token, "gw-sync", tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'gw-sync.yaml'}" in done.stdout
    assert f"next: edgecore --config {tmp_path / 'gw-sync.yaml'}" in done.stdout
    pki = tmp_path / "gw-sync" / "pki"
    assert stat.S_IMODE((pki / "node.key").stat().st_mode) == 0o600
    config = yaml.safe_load((tmp_path / "gw-sync.yaml").read_text())
    assert config["hub"]["endpoints"] == [f"wss://127.0.0.1:{hub.edge_port}"]
    subject = certs.decode_certificate_file(pki / "node.crt")["subject"]
    assert (("commonName", "gw-sync"),) in subject

    edge = Edge(tmp_path / "gw-sync", "gw-sync", hub.edge)
    edge.args = ["--config", str(tmp_path / "gw-sync.yaml"), "--no-mqtt"]
    edge.start()
    try:
        wait_for(lambda: node_ready(hub, "gw-sync"), 20, "the joined node to be Ready")
        device = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "press"},
            "spec": {
                "nodeName": "gw-sync",
                "properties": [{"name": "p", "desired": {"value": "1"}}],
            },
        }
        assert hub.request("POST", f"{NS}/devices", device)[0] == 201
        wait_for(lambda: ("default", "press") in edge.cached(), 20, "the device at the edge")
    finally:
        edge.stop()


def test_a_second_join_with_a_single_use_token_says_it_was_used(hub: Hub, tmp_path: Path) -> None:
    token = new_token(hub, node="gw-once")
    assert join(hub, token, "gw-once", tmp_path).returncode == 0
    again = join(hub, token, "gw-once", tmp_path / "again")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "was for one join and was used" in again.stderr
    assert "edgeward token create" in again.stderr


def test_a_token_pinning_another_ca_sends_nothing_and_stays_usable(
    hub: Hub, tmp_path: Path
) -> None:
    """A pin mismatch stops the join before the token leaves the machine."""
    token = new_token(hub, node="gw-pin")
    forged = "0" * 64 + token[64:]
    done = join(hub, forged, "gw-pin", tmp_path)
    assert done.returncode == 1
    assert "nothing was sent" in done.stderr and "sha256:" + "0" * 64 in done.stderr
    assert not (tmp_path / "gw-pin" / "pki" / "node.crt").exists()
    assert join(hub, token, "gw-pin", tmp_path).returncode == 0  # the real token still works


def test_a_token_bound_to_another_node_is_refused(hub: Hub, tmp_path: Path) -> None:
    done = join(hub, new_token(hub, node="gw-a"), "gw-b", tmp_path)
    assert done.returncode == 1
    assert "is bound to node gw-a, not gw-b" in done.stderr


def test_join_never_overwrites_a_config_that_differs(hub: Hub, tmp_path: Path) -> None:
    """An edited config is left alone and the new one goes beside it; the same one is kept."""
    assert join(hub, new_token(hub, node="gw-cfg"), "gw-cfg", tmp_path).returncode == 0
    path = tmp_path / "gw-cfg.yaml"
    same = join(hub, new_token(hub, node="gw-cfg"), "gw-cfg", tmp_path)
    assert same.returncode == 0 and f"kept {path}" in same.stdout
    path.write_text(path.read_text() + "status_interval: 5\n")
    edited = path.read_text()
    differs = join(hub, new_token(hub, node="gw-cfg"), "gw-cfg", tmp_path)
    assert differs.returncode == 0
    assert path.read_text() == edited
    assert f"{path} exists and differs" in differs.stdout
    assert (tmp_path / "gw-cfg.yaml.new").exists()


def test_a_join_for_a_connected_node_name_is_refused(hub: Hub, tmp_path: Path) -> None:
    edge = joined_edge(hub, "gw-live", tmp_path, "--no-mqtt")
    edge.start()
    try:
        wait_for(lambda: node_ready(hub, "gw-live"), 20, "gw-live to be Ready")
        done = join(hub, new_token(hub, node="gw-live"), "gw-live", tmp_path / "thief")
        assert done.returncode == 1
        assert "node gw-live is connected to the hub now" in done.stderr
        assert node_ready(hub, "gw-live")
    finally:
        edge.stop()


def test_deleting_a_node_revokes_its_certificate_and_ends_its_session(
    hub: Hub, tmp_path: Path
) -> None:
    """The session closes; the next connection is refused at the handshake; edgecore stops
    with the reason; the refusal is in the audit log with the certificate's identity."""
    edge = joined_edge(hub, "gw-del", tmp_path, "--no-mqtt")
    edge.start()
    wait_for(lambda: node_ready(hub, "gw-del"), 20, "gw-del to be Ready")
    assert hub.request("DELETE", "/api/v1/nodes/gw-del")[0] == 200
    assert edge.proc is not None
    assert edge.proc.wait(20) == 1
    assert "was revoked (its Node was deleted); join again" in edge.log()
    assert hub.request("GET", "/api/v1/nodes/gw-del")[0] == 404
    refusals = [e for e in audit(hub) if e.get("node") == "gw-del" and e["outcome"] == "refused"]
    assert refusals and refusals[-1]["identity"].startswith("certificate:")


# -- renewal and expiry ----------------------------------------------------------------


def stored_certificates(hub: Hub, node: str) -> int:
    conn = sqlite3.connect(f"file:{hub.data_dir / 'hub.db'}?mode=ro", uri=True, timeout=10)
    try:
        return int(
            conn.execute("SELECT count(*) FROM node_certs WHERE node = ?", (node,)).fetchone()[0]
        )
    finally:
        conn.close()


def test_a_certificate_renews_itself_over_the_link(tmp_path: Path) -> None:
    """With a 17 s certificate, the node renews at two thirds of its life, without a
    restart, and carries on with the new one (new key, new serial)."""
    hub = Hub(tmp_path / "hub", "--node-certificate-days", "0.0002", secure=True)
    hub.start()
    edge = joined_edge(hub, "gw-renew", tmp_path, "--no-mqtt")
    try:
        cert_file = tmp_path / "gw-renew" / "pki" / "node.crt"
        key_file = tmp_path / "gw-renew" / "pki" / "node.key"
        first_cert, first_key = cert_file.read_bytes(), key_file.read_bytes()
        edge.start()
        wait_for(lambda: cert_file.read_bytes() != first_cert, 60, "the certificate to renew")
        assert key_file.read_bytes() != first_key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        wait_for(lambda: "reconnecting with it" in edge.log(), 10, "the reconnect")
        wait_for(lambda: edge.log().count("connected at revision") >= 2, 20, "a new session")
        assert edge.running and node_ready(hub, "gw-renew")
        assert stored_certificates(hub, "gw-renew") >= 2
    finally:
        edge.kill()
        hub.kill()


def test_a_node_offline_past_expiry_rejoins_and_keeps_its_outbox(
    tmp_path: Path, mqtt_broker: Mosquitto
) -> None:
    """A reading buffered while the hub was away survives the certificate expiring: the
    node says to join again, joins with a new token, and the reading reaches the hub."""
    hub = Hub(
        tmp_path / "hub",
        "--node-certificate-days",
        "0.0002",
        "--node-grace-period",
        "2",
        secure=True,
    )
    hub.start()
    broker = ["--mqtt", f"{mqtt_broker.host}:{mqtt_broker.port}"]
    edge = joined_edge(hub, "gw-away", tmp_path, *broker)
    mapper = FakeMapper(mqtt_broker, "$hw/events/device/default/meter/#")
    try:
        meter = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "meter"},
            "spec": {"nodeName": "gw-away", "properties": [{"name": "kwh"}]},
        }
        assert hub.request("POST", f"{NS}/devices", meter)[0] == 201
        edge.start()
        wait_for(lambda: ("default", "meter") in edge.cached(), 20, "the device at the edge")
        hub.kill()
        update = {"event_id": "", "timestamp": 0, "twin": {"kwh": {"actual": {"value": "42"}}}}
        mapper.publish("$hw/events/device/default/meter/twin/update", update)
        with edge.db() as conn:
            wait_for(
                lambda: conn.execute("SELECT count(*) FROM outbox").fetchone()[0] > 0,
                10,
                "the reading in the outbox",
            )
        edge.stop()
        expiry = certs.decode_certificate_file(tmp_path / "gw-away" / "pki" / "node.crt")
        time.sleep(max(0.0, ssl.cert_time_to_seconds(expiry["notAfter"]) - time.time() + 1))

        hub.start()
        expired = run("edgecore", "--config", str(tmp_path / "gw-away.yaml"), *broker)
        assert expired.returncode == 2
        assert "this node's certificate expired" in expired.stderr
        assert (
            "edgeward join" in expired.stderr and "the cache and outbox are kept" in expired.stderr
        )

        wait_for(lambda: not node_ready(hub, "gw-away"), 20, "the node to be NotReady")
        rejoined = join(hub, new_token(hub, node="gw-away"), "gw-away", tmp_path)
        assert rejoined.returncode == 0, rejoined.stderr
        assert "kept" in rejoined.stdout
        edge.start()

        def kwh() -> Any:
            _, body = hub.request("GET", f"{NS}/devices/meter")
            twins = body.get("status", {}).get("twins", [])
            return [t["reported"]["value"] for t in twins if t.get("propertyName") == "kwh"]

        wait_for(lambda: kwh() == ["42"], 20, "the buffered reading at the hub")
    finally:
        mapper.close()
        edge.kill()
        hub.kill()


# -- node-scoped rules on the REST API ----------------------------------------------------


def test_a_node_token_reads_only_what_is_bound_to_its_node(hub: Hub) -> None:
    """Its own Node and Devices, one at a time; never another node's, never a list, never a
    delete; every refusal is a 403 in the audit log with the token's identity."""
    for name, node in (("mine", "gw-scope"), ("theirs", "gw-other")):
        device = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "properties": [{"name": "p", "desired": {"value": "1"}}]},
        }
        assert hub.request("POST", f"{NS}/devices", device)[0] == 201
    _status, body = hub.request(
        "POST", "/api/v1/tokens", {"role": "node", "node": "gw-scope", "singleUse": False}
    )
    token = body["token"]
    assert hub.request("GET", f"{NS}/devices/mine", token=token)[0] == 200
    assert hub.request("GET", f"{NS}/devices/theirs", token=token)[0] == 403
    assert hub.request("GET", f"{NS}/devices", token=token)[0] == 403
    patch = {"spec": {"properties": [{"name": "p", "desired": {"value": "2"}}]}}
    assert (
        hub.request(
            "PATCH", f"{NS}/devices/mine", patch, "application/merge-patch+json", token=token
        )[0]
        == 200
    )
    steal = {"spec": {"nodeName": "gw-other"}}
    assert (
        hub.request(
            "PATCH", f"{NS}/devices/mine", steal, "application/merge-patch+json", token=token
        )[0]
        == 403
    )
    assert hub.request("DELETE", f"{NS}/devices/mine", token=token)[0] == 403
    _, mine = hub.request("GET", f"{NS}/devices/mine")
    assert mine["spec"]["nodeName"] == "gw-scope"
    assert mine["metadata"]["annotations"]["edgeward.io/last-changed-by"].startswith(
        f"token:{token.split('.')[1]} (node gw-scope) at "
    )
    refused = [e for e in audit(hub) if e["outcome"] == 403 and "/devices" in e["target"]]
    assert {e["target"] for e in refused} >= {f"{NS}/devices/theirs", f"{NS}/devices"}
    assert all(e["identity"] == f"token:{token.split('.')[1]}" for e in refused)


def test_a_viewer_reads_but_never_writes(hub: Hub) -> None:
    viewer = new_token(hub, role="viewer")
    assert hub.request("GET", "/api/v1/nodes", token=viewer)[0] == 200
    status, body = hub.request("POST", "/api/v1/nodes", {"metadata": {"name": "x"}}, token=viewer)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert "is a viewer" in body["message"]
    assert hub.request("GET", "/api/v1/tokens", token=viewer)[0] == 403


def test_requests_without_a_valid_token_get_401_and_health_stays_open(hub: Hub) -> None:
    assert hub.request("GET", "/api/v1/nodes", token="")[0] == 401
    status, body = hub.request("GET", "/api/v1/nodes", token="abcdef.0123456789abcdefghijklmnop")
    assert status == 401 and body["details"]["causes"][0]["reason"] == "unknown"
    revoked = new_token(hub, role="viewer")
    assert hub.request("DELETE", f"/api/v1/tokens/{revoked.split('.')[1]}")[0] == 200
    status, body = hub.request("GET", "/api/v1/nodes", token=revoked)
    assert status == 401 and body["details"]["causes"][0]["reason"] == "revoked"
    assert hub.request("GET", "/healthz", token="")[0] == 200


def test_a_certificate_that_expires_while_the_hub_is_away_stops_the_edge_with_the_reason(
    tmp_path: Path,
) -> None:
    """The hub refuses an expired certificate inside the TLS handshake, which the edge sees
    only as a closed connection: edgecore must say so and stop, not retry forever."""
    hub = Hub(tmp_path / "hub", "--node-certificate-days", "0.0001", secure=True)  # 8.6 s
    hub.start()
    edge = joined_edge(hub, "gw-lapse", tmp_path, "--no-mqtt")
    try:
        edge.start()
        wait_for(lambda: "connected at revision" in edge.log(), 20, "the edge to connect")
        hub.kill()  # before the renewal is due: the certificate will lapse
        assert edge.proc is not None
        assert edge.proc.wait(30) == 1
        assert "this node's certificate expired at" in edge.log()
        assert "the cache and outbox are kept" in edge.log()
    finally:
        edge.kill()
        hub.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="joining for another user's data dir needs root")
def test_join_as_root_gives_the_credentials_to_the_data_dirs_owner(
    hub: Hub, tmp_path: Path
) -> None:
    """`sudo edgeward join` for edgecore's data dir: the service user can read its key."""
    nobody = 65534
    data = tmp_path / "gw-owned"
    data.mkdir()
    os.chown(data, nobody, nobody)
    assert join(hub, new_token(hub, node="gw-owned"), "gw-owned", tmp_path).returncode == 0
    for name in ("pki", "pki/ca.crt", "pki/node.key", "pki/node.crt"):
        assert (data / name).stat().st_uid == nobody, name
    assert stat.S_IMODE((data / "pki" / "node.key").stat().st_mode) == 0o600


def test_a_certificate_the_hubs_tls_refuses_is_named_in_the_edges_log(
    hub: Hub, tmp_path: Path
) -> None:
    """Under TLS 1.3 the hub refuses a client certificate after the handshake, which the
    edge sees only as a closed connection: its log line says what that probably means."""
    from cloudhub.pki import Authority, init_pki, pki_paths

    edge = joined_edge(hub, "gw-foreign", tmp_path, "--no-mqtt")
    other = pki_paths(tmp_path / "other-ca")
    init_pki(other, ["localhost"], ["127.0.0.1"])
    key = certs.new_private_key()
    foreign = Authority(other).sign_node(certs.node_csr(key, "gw-foreign"), "gw-foreign", 30)
    pki = tmp_path / "gw-foreign" / "pki"
    (pki / "node.crt").write_bytes(foreign.pem)
    certs.write_private(pki / "node.key", certs.private_key_pem(key))
    edge.start()
    try:
        wait_for(
            lambda: "it may not accept this node's certificate (join again)" in edge.log(),
            20,
            "the edge to say the hub may refuse its certificate",
        )
        assert hub.request("GET", "/api/v1/nodes/gw-foreign")[0] == 404  # nothing registered
    finally:
        edge.kill()
