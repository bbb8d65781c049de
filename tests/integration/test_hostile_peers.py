"""Hostile peers against a secure hub: a real cloudhub with TLS and tokens, real edgecore
nodes joined through the hub's join API, and attackers on real TLS sockets.

One hub serves the module. Two honest nodes stay connected throughout: edge-a (with a
mapper on Mosquitto) and edge-b. After each attack the test checks what an operator
relies on: the attacker got a clear refusal, nothing of the attack was stored, and the
honest nodes are still Ready and still receive desired values.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from cloudhub.edgeserver import DEFAULT_FRAMES_PER_SECOND
from edgeward import storable
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.nodecerts import NodeCert, foreign, join, join_request, new_csr, new_token
from tests.support.procs import Edge, Hub, wait_for

NS = "/api/v1/namespaces/default"
MQTT_DEVICE = "$hw/events/device/default"
#: The hub's default per-node frame rate (cloudhub node_frames_per_second) and its burst.
RATE = DEFAULT_FRAMES_PER_SECOND
BURST = 2 * RATE


@dataclass
class World:
    hub: Hub
    a: Edge
    b: Edge
    broker: Mosquitto


def model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "panel"},
        "spec": {
            "properties": [
                {"name": "target", "type": "INT", "accessMode": "ReadWrite"},
                {"name": "label", "type": "STRING", "accessMode": "ReadWrite"},
            ]
        },
    }


def device(name: str, node: str, target: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "deviceModelRef": {"name": "panel"},
            "properties": [{"name": "target", "desired": {"value": target}}, {"name": "label"}],
        },
    }


def start_edge(hub: Hub, tmp: Path, node: str, *flags: str) -> Edge:
    """A node joined through the hub's join API, then run as a real edgecore over wss."""
    join(hub, node, tmp / node)
    edge = Edge(tmp / node, node, hub.edge, "--status-interval", "0.5", *flags)
    edge.start()
    return edge


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mqtt_broker: Mosquitto) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hostile")
    hub = Hub(tmp / "hub", "--node-grace-period", "4", secure=True)
    hub.start()
    edges: list[Edge] = []
    try:
        assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
        for name, node in (("a-dev", "edge-a"), ("b-dev", "edge-b")):
            assert hub.request("POST", f"{NS}/devices", device(name, node))[0] == 201
        mqtt = f"{mqtt_broker.host}:{mqtt_broker.port}"
        edges.append(start_edge(hub, tmp, "edge-a", "--mqtt", mqtt))
        edges.append(start_edge(hub, tmp, "edge-b", "--no-mqtt"))
        world = World(hub, edges[0], edges[1], mqtt_broker)
        for edge in edges:
            wait_for(lambda e=edge: ready(hub, e.node), 20, f"{edge.node} to be Ready")
        yield world
    finally:
        for edge in edges:
            edge.kill()
        hub.kill()


# -- what the honest side relies on -----------------------------------------------------


def ready(hub: Hub, node: str) -> dict[str, Any] | None:
    """The node's Ready condition when it is True, else None."""
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    if status != 200:
        return None
    conditions = body.get("status", {}).get("conditions", [])
    found = next((c for c in conditions if c["type"] == "Ready"), None)
    return found if found and found["status"] == "True" else None


def cached_target(edge: Edge, name: str) -> str | None:
    obj = edge.cached().get(("default", name))
    if obj is None:
        return None
    props = {p["name"]: p.get("desired", {}).get("value") for p in obj["spec"]["properties"]}
    return props.get("target")


_values = itertools.count(100)  # each desired value written is new


def still_served(world: World) -> None:
    """Both honest nodes are Ready and a new desired value reaches each node's cache."""
    for edge, name in ((world.a, "a-dev"), (world.b, "b-dev")):
        assert ready(world.hub, edge.node), f"{edge.node} is not Ready"
        value = str(next(_values))
        patch = {"spec": device(name, edge.node, value)["spec"]}
        status, body = world.hub.request("PATCH", f"{NS}/devices/{name}", patch)
        assert status == 200, body
        wait_for(lambda e=edge, n=name, v=value: cached_target(e, n) == v, 15, f"{name} = {value}")
        assert edge.running


def spec_of(hub: Hub, path: str) -> dict[str, Any]:
    """An object as stored, without the status its heartbeats keep moving."""
    status, body = hub.request("GET", path)
    assert status == 200, body
    return {k: v for k, v in body.items() if k != "status"}


def connections_of(hub: Hub, node: str) -> int:
    """How many sessions the hub has opened for ``node`` (its log says each once)."""
    return hub.log().count(f"node {node}: connected from")


def audit(hub: Hub) -> list[dict[str, Any]]:
    path = hub.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- attackers --------------------------------------------------------------------------


def open_ws(hub: Hub, cred: NodeCert) -> ClientConnection:
    # 30 s: once in ~7 full runs the hub answered an upgrade here after more than 10 s
    # (reported for investigation; these tests are about refusals, not latency)
    return connect(
        hub.edge, ssl=cred.context(), open_timeout=30, max_size=None, compression=None, proxy=None
    )


def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not a change batch (those come whenever the log moves)."""
    while True:
        msg = json.loads(ws.recv(timeout=10))
        if msg["type"] != "changes":
            return msg


def hello(node: str) -> str:
    return json.dumps({"type": "hello", "node": node, "revision": 0, "protocol": 1})


def closed_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


NO_ANSWER = ("closed", "ConnectionResetError")


def tls_refusal(hub: Hub, ctx: ssl.SSLContext) -> str:
    """Connect to the edge port with ``ctx`` and ask for a websocket: what ended it, when the
    hub never answered (TLS 1.3 clients learn of a refused certificate on their first read)."""
    with socket.create_connection(("127.0.0.1", hub.edge_port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(UPGRADE)
                answer = tls.recv(4096)
        except ssl.SSLError as exc:
            return exc.reason or str(exc)
        except ConnectionError as exc:
            return type(exc).__name__
    assert answer == b"", f"the hub answered a client it should not trust: {answer[:80]!r}"
    return "closed"


def never_opens(hub: Hub, cred: NodeCert) -> BaseException:
    """How a websocket client with ``cred`` failed to open a connection (any way but a
    time-out: the hub must refuse, not hang)."""
    try:
        ws = open_ws(hub, cred)
    except TimeoutError:
        raise
    except (InvalidHandshake, ConnectionClosed, OSError) as exc:
        return exc
    ws.close()
    raise AssertionError(f"a websocket opened for {cred.node}'s foreign certificate")


# -- a. TLS without the hub's certificate -----------------------------------------------


def test_clients_without_a_certificate_of_the_hub_fail_the_handshake(
    world: World, tmp_path: Path
) -> None:
    """A TLS client with no certificate, or with a node certificate from another CA (even one
    naming a live node), never reaches the websocket: nothing is stored and the live node
    keeps its session."""
    hub = world.hub
    bare = ssl.create_default_context(cafile=str(hub.ca))
    impostor = foreign(hub, "edge-a", tmp_path / "impostor")  # the live node's name
    stranger = foreign(hub, "stranger", tmp_path / "stranger")
    nodes_before = sorted(
        n["metadata"]["name"] for n in hub.request("GET", "/api/v1/nodes")[1]["items"]
    )
    sessions_before = connections_of(hub, "edge-a")
    health_before = hub.request("GET", "/healthz")[1]["edge"]

    # the alert says why; a reset or a bare close (the alert lost to the reset) is no answer
    # either
    assert tls_refusal(hub, bare) in {"TLSV13_ALERT_CERTIFICATE_REQUIRED", *NO_ANSWER}
    for cred in (impostor, stranger):
        assert tls_refusal(hub, cred.context()) in {"TLSV1_ALERT_UNKNOWN_CA", *NO_ANSWER}
        assert never_opens(hub, cred)

    names = sorted(n["metadata"]["name"] for n in hub.request("GET", "/api/v1/nodes")[1]["items"])
    assert names == nodes_before and "stranger" not in names
    assert hub.request("GET", "/api/v1/nodes/stranger")[0] == 404
    assert connections_of(hub, "edge-a") == sessions_before  # never replaced
    health = hub.request("GET", "/healthz")[1]["edge"]
    assert health["sessions"] == health_before["sessions"]
    # each of the five attempts above failed its TLS handshake, and the hub counted it
    assert health["handshakeFailures"] - health_before["handshakeFailures"] == 5
    still_served(world)


def answer_and_ticket(port: int, ctx: ssl.SSLContext, request: bytes) -> tuple[bytes, bool]:
    """The start of the answer to ``request`` over TLS 1.3, and whether the server sent a
    session ticket (tickets come right after the handshake, before any answer)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(request)
        answer = tls.recv(4096)
        assert tls.version() == "TLSv1.3"
        return answer, tls.session.has_ticket


def test_the_edge_port_sends_no_session_tickets(world: World, tmp_path: Path) -> None:
    """Edges never resume a TLS session, so the hub spends no handshake work on tickets for
    them (a fleet reconnecting is 10,000 handshakes); the API port, which browsers use,
    still sends them."""
    hub = world.hub
    node = join(hub, "ticketless", tmp_path / "ticketless")
    answer, ticket = answer_and_ticket(hub.edge_port, node.context(), UPGRADE)
    assert answer.startswith(b"HTTP/1.1 101") and not ticket
    health = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    api = ssl.create_default_context(cafile=str(hub.ca))
    answer, ticket = answer_and_ticket(hub.api_port, api, health)
    assert answer.startswith(b"HTTP/1.1 200") and ticket


# -- b. a node speaking for another -----------------------------------------------------


def test_a_node_saying_hello_as_another_is_refused_and_audited(
    world: World, tmp_path: Path
) -> None:
    """A valid node certificate saying hello as another node gets a forbidden error frame
    and a policy close; the other node's Node, devices and session are untouched; the
    audit log names the certificate's node and the node it claimed."""
    hub = world.hub
    mallory = join(hub, "mallory", tmp_path / "mallory")
    node_before = spec_of(hub, "/api/v1/nodes/edge-b")
    device_before = hub.request("GET", f"{NS}/devices/b-dev")[1]
    sessions_before = connections_of(hub, "edge-b")

    with open_ws(hub, mallory) as ws:
        ws.send(hello("edge-b"))
        error = recv(ws)
        assert error["type"] == "error" and error["code"] == "forbidden", error
        assert "mallory" in error["reason"]
        assert closed_code(ws) == 1008

    assert spec_of(hub, "/api/v1/nodes/edge-b") == node_before
    assert hub.request("GET", f"{NS}/devices/b-dev")[1] == device_before
    assert hub.request("GET", "/api/v1/nodes/mallory")[0] == 404  # nothing registered
    assert connections_of(hub, "edge-b") == sessions_before  # never replaced
    (line,) = [
        entry
        for entry in audit(hub)
        if entry["outcome"] == "refused" and entry.get("node") == "mallory"
    ]
    assert line["action"] == "hello" and line["role"] == "node"
    assert line["identity"].startswith("certificate:")  # the certificate, by serial
    assert "hello as node edge-b" in line["reason"], line
    still_served(world)


# -- c. a join for a name a live node holds ---------------------------------------------


def token_state(hub: Hub, token_id: str) -> str:
    tokens = hub.request("GET", "/api/v1/tokens")[1]["items"]
    return next(t["state"] for t in tokens if t["id"] == token_id)


def refusal(answer: tuple[int, Any]) -> tuple[int, str | Any]:
    """(HTTP status, details.causes[0].reason) of a refused request; the body if it has none."""
    status, body = answer
    try:
        return status, body["details"]["causes"][0]["reason"]
    except (KeyError, IndexError, TypeError):
        return status, body


def test_a_join_for_the_name_of_a_live_node_is_refused(world: World, tmp_path: Path) -> None:
    """A CSR for a name a connected node holds gets 409 node-live and no certificate; the
    single-use token is not spent by the refusal, and the live node keeps its session."""
    hub = world.hub
    token = new_token(hub, singleUse=True)
    sessions_before = connections_of(hub, "edge-a")

    answer = join_request(hub, token["token"], "edge-a", new_csr(tmp_path / "x", "edge-a"))
    assert refusal(answer) == (409, "node-live")
    assert "certificate" not in answer[1]
    assert token_state(hub, token["id"]) == "valid"
    status, body = join_request(hub, token["token"], "edge-c", new_csr(tmp_path / "c", "edge-c"))
    assert status == 201, body  # the same token joins a free name
    assert token_state(hub, token["id"]) == "used"

    assert connections_of(hub, "edge-a") == sessions_before
    still_served(world)


# -- d. tokens that may no longer be used -----------------------------------------------


def test_used_expired_and_revoked_tokens_are_refused_at_join_and_on_the_api(
    world: World, tmp_path: Path
) -> None:
    """A replayed single-use token, an expired token and a revoked token are each refused
    with their reason at join (401) and on the REST API (401), even right after they were
    accepted there: the hub's token cache never outlives the token."""
    hub = world.hub
    used = new_token(hub, node="replayed")
    expiring = new_token(hub, node="late", ttlSeconds=1)
    revoked = new_token(hub, node="revoked")
    for token in (used, expiring, revoked):  # each one works on the API first
        status, _ = hub.request("GET", f"/api/v1/nodes/{token['node']}", token=token["token"])
        assert status == 404  # authenticated: no such Node yet

    csr = new_csr(tmp_path / "replayed", "replayed")
    assert join_request(hub, used["token"], "replayed", csr)[0] == 201
    status, _ = hub.request("DELETE", f"/api/v1/tokens/{revoked['id']}")
    assert status == 200
    time.sleep(max(0.0, expiring_at(expiring) - time.time()))

    for token, reason in ((used, "used"), (expiring, "expired"), (revoked, "revoked")):
        node = token["node"]
        answer = join_request(hub, token["token"], node, new_csr(tmp_path / node, node))
        assert refusal(answer) == (401, reason)
        answer = hub.request("GET", f"/api/v1/nodes/{node}", token=token["token"])
        assert refusal(answer) == (401, reason)
    # nothing joined on a refused token: no second certificate for "replayed", no others
    issued = [e for e in audit(hub) if e["target"] == "/api/v1/join" and e["outcome"] == 201]
    assert sum(1 for e in issued if e.get("node") == "replayed") == 1
    assert not any(e.get("node") in ("late", "revoked") for e in issued)


def expiring_at(token: dict[str, Any]) -> float:
    """When a token expires, to the second the API shows it, plus that second."""
    return calendar.timegm(time.strptime(token["expires"], "%Y-%m-%dT%H:%M:%SZ")) + 1


# -- e. a flood of frames from one authenticated node -----------------------------------

FLOOD = 2000


def status_report(seq: int) -> str:
    """A one-row report: a heartbeat, the cheapest frame a node can make the hub take."""
    row = {"seq": seq, "topic": "node/status", "key": "node-status", "body": {}}
    return json.dumps({"type": "report", "items": [row]})


async def flood(hub: Hub, cred: NodeCert, frames: int, meanwhile: Any) -> dict[str, Any]:
    """Say hello, send ``frames`` reports as fast as the connection takes them, run
    ``meanwhile()`` in a thread, then wait for the hub to acknowledge every one.

    Returns when each acknowledgement came (seconds from before the connection opened)
    and every frame that was not an ack."""
    start = time.monotonic()
    acks: list[tuple[float, int]] = []
    others: list[dict[str, Any]] = []
    async with async_connect(
        hub.edge, ssl=cred.context(), max_size=None, compression=None, proxy=None
    ) as ws:
        await ws.send(hello(cred.node))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        first = welcome["report_seq"] + 1
        last = first + frames - 1
        done = asyncio.Event()

        async def read() -> None:
            async for text in ws:
                msg = json.loads(text)
                if msg["type"] == "report_ack":
                    acks.append((time.monotonic() - start, msg["seq"]))
                    if msg["seq"] == last:
                        done.set()
                elif msg["type"] != "changes":
                    others.append(msg)

        reader = asyncio.create_task(read())
        for seq in range(first, last + 1):
            await ws.send(status_report(seq))
        await asyncio.to_thread(meanwhile)
        # slowed, not dropped: every frame is taken in its turn (the bucket lets 200 a second
        # through; the timeout is generous)
        await asyncio.wait_for(done.wait(), timeout=3 * frames / RATE + 20)
        reader.cancel()
    return {"acks": acks, "others": others, "first": first}


def test_a_flooding_node_is_slowed_and_the_others_are_still_served(
    world: World, tmp_path: Path
) -> None:
    """A node sending thousands of frames as fast as it can is held to its frame rate and
    loses none of them; the honest nodes stay Ready throughout and still get new desired
    values promptly."""
    hub = world.hub
    flooder = join(hub, "flooder", tmp_path / "flooder")
    transitions = {
        e.node: (ready(hub, e.node) or {}).get("lastTransitionTime") for e in (world.a, world.b)
    }

    result = asyncio.run(flood(hub, flooder, FLOOD, lambda: still_served(world)))

    acks = result["acks"]
    assert result["others"] == []  # no error frame, no close: slowed, never refused
    assert [seq for _, seq in acks] == sorted(seq for _, seq in acks)
    assert acks[-1][1] == result["first"] + FLOOD - 1
    # Held to its rate: by any moment, the hub has taken at most the burst plus the rate
    # times the time since the connection opened (with 10% for the clocks' reading). A hub
    # without the limit takes these heartbeats thousands a second, far past this bound.
    for at, seq in acks:
        taken = seq - result["first"] + 1
        assert taken <= BURST + 1.1 * RATE * at + 10, (at, taken)
    for edge in (world.a, world.b):  # never went NotReady meanwhile
        assert (ready(hub, edge.node) or {}).get("lastTransitionTime") == transitions[edge.node]
    still_served(world)


# -- g. values and payloads over their size limits --------------------------------------

TOO_LONG = "v" * 513  # a twin value is at most 512 characters


def twin_row(seq: int, device: str, **values: str) -> dict[str, Any]:
    twins = {k: {"reported": {"value": v, "timestamp": seq}} for k, v in values.items()}
    return {
        "seq": seq,
        "topic": "twin/reported",
        "key": f"twin/default/{device}",
        "body": {"device": f"default/{device}", "twins": twins},
    }


def report(*rows: dict[str, Any]) -> str:
    return json.dumps({"type": "report", "items": list(rows)})


def reported_label(hub: Hub, name: str) -> str | None:
    twins = hub.request("GET", f"{NS}/devices/{name}")[1].get("status", {}).get("twins", [])
    found = next((t for t in twins if t["propertyName"] == "label"), {})
    return found.get("reported", {}).get("value")


def test_oversized_values_from_a_node_are_refused_row_by_row(world: World, tmp_path: Path) -> None:
    """An authenticated node reporting a twin value over 512 characters or an upload over
    1 MiB gets those rows back as rejected, with the limit as reason; the other rows of the
    frame are stored and the session goes on. A frame over 4 MiB closes that connection
    (1009) and nothing else; a desired value over the limit is refused by the API (422)."""
    hub = world.hub
    assert hub.request("POST", f"{NS}/devices", device("bulky-dev", "bulky"))[0] == 201
    bulky = join(hub, "bulky", tmp_path / "bulky")
    upload = {"topic": "$hw/events/upload/bulky-dev", "payload": "u" * storable.MAX_REPORT_BYTES}
    with open_ws(hub, bulky) as ws:
        ws.send(hello("bulky"))
        assert recv(ws)["type"] == "welcome"
        ws.send(
            report(
                twin_row(1, "bulky-dev", label=TOO_LONG),
                {"seq": 2, "topic": "upload", "key": None, "body": upload},
                {
                    "seq": 3,
                    "topic": "device/state",
                    "key": "state/default/bulky-dev",
                    "body": {"device": "default/bulky-dev", "state": "online"},
                },
            )
        )
        ack = recv(ws)
        assert ack["type"] == "report_ack" and ack["seq"] == 3, ack
        reasons = {r["seq"]: r["reason"] for r in ack.get("rejected", [])}
        assert sorted(reasons) == [1, 2], ack
        assert "512" in reasons[1]
        assert str(storable.MAX_REPORT_BYTES) in reasons[2]
        ws.send(report(twin_row(4, "bulky-dev", label="fine")))
        assert recv(ws) == {"type": "report_ack", "seq": 4}
    status = hub.request("GET", f"{NS}/devices/bulky-dev")[1]["status"]
    assert status["state"] == "online"
    assert reported_label(hub, "bulky-dev") == "fine"

    with open_ws(hub, bulky) as ws:
        ws.send(hello("bulky"))
        assert recv(ws)["type"] == "welcome"
        try:  # the hub closes as soon as it reads the frame's length: the send may fail
            ws.send(report(twin_row(5, "bulky-dev", label="x" * storable.MAX_FRAME_BYTES)))
            assert closed_code(ws) == 1009
        except (ConnectionClosed, OSError):
            pass
    wait_for(
        lambda: any(
            "node bulky: disconnected" in line and "sent 1009 (message too big)" in line
            for line in hub.log().splitlines()
        ),
        10,
        "the hub to close the connection for its frame's size, and say so",
    )
    assert reported_label(hub, "bulky-dev") == "fine"

    before = hub.request("GET", f"{NS}/devices/b-dev")[1]
    patch = {"spec": device("b-dev", "edge-b", TOO_LONG)["spec"]}
    assert hub.request("PATCH", f"{NS}/devices/b-dev", patch)[0] == 422
    assert hub.request("GET", f"{NS}/devices/b-dev")[1] == before
    still_served(world)


def test_a_mapper_over_the_limits_is_refused_at_the_edge(world: World) -> None:
    """A mapper's twin value over 512 characters gets KubeEdge's 400 (on the result topic
    with an empty device id, as KubeEdge sends it for a body it cannot validate) and an
    MQTT message over 1 MiB is refused unread; neither holds back the mapper's next update,
    which reaches the hub."""
    hub, topic = world.hub, f"{MQTT_DEVICE}/a-dev/twin/update"
    invalid = "$hw/events/device//twin/update/result"
    mapper = FakeMapper(world.broker, f"{topic}/result", invalid)
    try:
        mapper.publish(topic, update("big", label=TOO_LONG))
        refused = mapper.expect(invalid, where=lambda b: b.get("event_id") == "big")
        assert refused["code"] == 400 and "512" in refused["reason"], refused
        mapper.publish("$hw/events/upload/a-dev", b"u" * (storable.MAX_REPORT_BYTES + 1))
        mapper.publish(topic, update("after", label="after"))
        mapper.expect(f"{topic}/result", where=lambda b: b.get("event_id") == "after")
        wait_for(lambda: reported_label(hub, "a-dev") == "after", 15, "the later update")
    finally:
        mapper.close()
    assert f"refused a {storable.MAX_REPORT_BYTES + 1} byte message" in world.a.log()
    assert TOO_LONG not in json.dumps(hub.request("GET", f"{NS}/devices/a-dev")[1])
    still_served(world)


def update(event: str, **actual: str) -> dict[str, Any]:
    """A mapper's twin update (KubeEdge's payload)."""
    return {
        "event_id": event,
        "timestamp": 0,
        "twin": {k: {"actual": {"value": v}} for k, v in actual.items()},
    }
