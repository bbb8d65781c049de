"""Building blocks for the session cores' tests: frames, change-log rows, command filters."""

from __future__ import annotations

import json
from typing import Any, Literal

from edgeward import protocol
from edgeward.session.commands import Close, Command, Job, Log, Send
from edgeward.sync import ChangeRow

NODE = "edge-1"


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def hello(node: str = NODE, revision: int = 0, proto: int = 1, **extra: Any) -> str:
    return frame(type="hello", node=node, revision=revision, protocol=proto, **extra)


def device(name: str, node: str | None, revision: int, temp: str = "21") -> dict[str, Any]:
    spec: dict[str, Any] = {"properties": [{"name": "temp", "desired": {"value": temp}}]}
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": str(revision)},
        "spec": spec,
    }


def row(
    revision: int,
    name: str,
    op: Literal["create", "update", "delete"] = "create",
    route: str | None = NODE,
    prev_route: str | None = None,
) -> ChangeRow:
    return ChangeRow(
        revision, "Device", "default", name, op, route, prev_route, device(name, route, revision)
    )


def report_item(seq: int, key: str | None = "node-status") -> dict[str, Any]:
    return {"seq": seq, "topic": "node/status", "key": key, "body": {"usage": {"cpu": 1}}}


def report(*seqs: int) -> str:
    return frame(type="report", items=[report_item(s) for s in seqs])


def sent(commands: list[Command]) -> list[protocol.Message]:
    return [c.message for c in commands if isinstance(c, Send)]


def sent_types(commands: list[Command]) -> list[str]:
    return [m.type for m in sent(commands)]


def jobs(commands: list[Command]) -> list[Job]:
    return [c for c in commands if isinstance(c, Job)]


def closes(commands: list[Command]) -> list[Close]:
    return [c for c in commands if isinstance(c, Close)]


def logs(commands: list[Command]) -> str:
    return "\n".join(c.text for c in commands if isinstance(c, Log))


def errors(commands: list[Command]) -> list[protocol.Error]:
    return [m for m in sent(commands) if isinstance(m, protocol.Error)]
