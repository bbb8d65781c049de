"""The two entry points: a message from a mapper, and a change from the hub.

``handle_message`` never raises for any topic or payload: refusals become a
TwinError in ``Outcome.error`` (and the error result KubeEdge sends, when it
sends one). ``apply_cloud`` reconciles a Device the hub sent with the twin
state the edge holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from devicetwin import errors, topics
from devicetwin.errors import TwinError
from devicetwin.limits import MAX_TWINS
from devicetwin.model import DeviceTwin, Twin
from devicetwin.outcome import UPLOAD, Context, HubReport, Outcome, Publish
from devicetwin.payloads import (
    BaseRequest,
    Delta,
    Document,
    ErrorResult,
    MembershipResult,
    MembershipUpdated,
    StateRequest,
    StateResult,
    TwinResult,
    UpdateRequest,
    visible_twins,
)
from devicetwin.reports import state_report, twin_report, twin_report_fits
from devicetwin.rules import Change, cloud_write, merge_update
from devicetwin.topics import Action, Route
from devicetwin.values import check_value, key_ok, twin_type_of, value_ok

Lookup = Callable[[str], DeviceTwin | None]
Members = Callable[[], list[DeviceTwin]]

#: Device states mappers send (any case), and the state each means on the hub: KubeEdge
#: 1.6's online, offline and unknown, the OK and DISCONNECTED of its mappers, 1.15-1.17's
#: disconnected, and 1.18's set (ok, online, offline, disconnected, unhealthy, unknown).
#: online also means "seen now" (lastOnlineTime).
STATES = {
    "online": "online",
    "ok": "online",
    "offline": "offline",
    "disconnected": "offline",
    "unhealthy": "unhealthy",
    "unknown": "unknown",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(now_ms: int) -> str:
    """``now_ms`` as an RFC 3339 UTC time to the second, e.g. ``2024-05-01T12:00:00Z``."""
    return (_EPOCH + timedelta(milliseconds=now_ms)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _refused(err: TwinError, topic: str, ctx: Context) -> Outcome:
    """The error result KubeEdge publishes for ``err``, on ``topic``."""
    reply = ErrorResult(err.event_id, ctx.now_ms, err.code, err.reason)
    return Outcome(publish=(Publish(topic, reply.to_wire()),), error=err.replying_on(topic))


def _twin_changed(
    device: DeviceTwin,
    changes: dict[str, Change],
    event_id: str,
    ctx: Context,
    conflicts: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[Publish], HubReport]:
    """The document and delta to publish and the report to send after ``changes``."""
    doc = Document(event_id, ctx.now_ms, changes)
    out = [Publish(topics.device_topic(device.id, "twin/update/document"), doc.to_wire())]
    delta = Delta.of(device, ctx.new_id, ctx.now_ms)
    if delta is not None:
        out.append(Publish(topics.device_topic(device.id, "twin/update/delta"), delta.to_wire()))
    return out, twin_report(device, conflicts)


# ---- messages from mappers -----------------------------------------------------------------


def _twin_update(route: Route, payload: bytes, ctx: Context, lookup: Lookup) -> Outcome:
    try:
        request = UpdateRequest.parse(payload)
    except TwinError as err:
        return _refused(err, topics.EMPTY_ID_UPDATE_RESULT, ctx)
    result_topic = topics.device_topic(route.device_id, "twin/update/result")
    device = lookup(route.device_id)
    if device is None:
        err = errors.NotFound(errors.UPDATE_NOT_FOUND, request.event_id)
        return _refused(err, result_topic, ctx)
    try:
        merge = merge_update(device, request, ctx.now_ms)
    except TwinError as err:
        return _refused(err, result_topic, ctx)
    result = TwinResult(request.event_id, ctx.now_ms, merge.result)
    publish = [Publish(result_topic, result.to_wire())]
    if not merge.changes:
        return Outcome(publish=tuple(publish))
    new = device.with_twins(merge.twins)
    more, report = _twin_changed(new, dict(merge.changes), request.event_id, ctx)
    # The hub drops a whole report it cannot take: refuse the update instead of answering it.
    if (problem := _unsendable(new, report)) is not None:
        return _refused(errors.BadRequest(problem, request.event_id), result_topic, ctx)
    return Outcome(updated=(new,), publish=(*publish, *more), reports=(report,))


def _unsendable(device: DeviceTwin, report: HubReport) -> str | None:
    """Why the hub could never take ``report`` of ``device``, or None when it can."""
    if len(device.twins) > MAX_TWINS:
        return errors.TOO_MANY_TWINS
    if not twin_report_fits(report):
        return errors.REPORT_TOO_LARGE
    return None


def _twin_get(route: Route, payload: bytes, ctx: Context, lookup: Lookup) -> Outcome:
    result_topic = topics.device_topic(route.device_id, "twin/get/result")
    try:
        request = BaseRequest.parse(payload, errors.UNMARSHAL_GET)
    except TwinError as err:
        return _refused(err, result_topic, ctx)
    device = lookup(route.device_id)
    if device is None:
        reason = errors.get_not_found(route.device_id)
        return _refused(errors.NotFound(reason, request.event_id), result_topic, ctx)
    result = TwinResult(request.event_id, ctx.now_ms, visible_twins(device))
    return Outcome(publish=(Publish(result_topic, result.to_wire()),))


def _state_update(route: Route, payload: bytes, ctx: Context, lookup: Lookup) -> Outcome:
    # KubeEdge answers nothing when it refuses a state update; neither do we, but for a state
    # we do not know: that one gets an error result, so the mapper is not left guessing.
    try:
        request = StateRequest.parse(payload)
    except TwinError as err:
        return Outcome(error=err)
    device = lookup(route.device_id)
    if device is None:
        return Outcome(
            error=errors.NotFound(errors.state_not_found(route.device_id), request.event_id),
        )
    topic = topics.device_topic(route.device_id, "state/update/result")
    state = STATES.get(request.state.lower() if request.state.isascii() else "")
    if state is None:
        return _refused(errors.BadRequest(errors.BAD_STATE, request.event_id), topic, ctx)
    seen = rfc3339(ctx.now_ms) if state == "online" else None
    new = replace(device, state=state, last_online=seen or device.last_online)
    # the result echoes the state as the mapper spelled it, as KubeEdge's does
    result = StateResult(ctx.new_id(), ctx.now_ms, new.name, request.state, seen)
    return Outcome(
        updated=(new,),
        publish=(Publish(topic, result.to_wire()),),
        reports=(state_report(new),),
    )


def _membership_get(ctx: Context, payload: bytes, members: Members) -> Outcome:
    topic = topics.node_topic(ctx.node, "membership/get/result")
    try:
        request = BaseRequest.parse(payload, errors.UNMARSHAL_MEMBERSHIP)
    except TwinError as err:
        return _refused(err, topic, ctx)
    result = MembershipResult(request.event_id, ctx.now_ms, tuple(members()))
    return Outcome(publish=(Publish(topic, result.to_wire()),))


def _upload(topic: str, payload: bytes) -> Outcome:
    body: dict[str, Any] = {"topic": topic}
    try:
        body["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        body["payload"] = base64.b64encode(payload).decode("ascii")
        body["encoding"] = "base64"
    return Outcome(reports=(HubReport(UPLOAD, None, body),))


def handle_message(
    topic: str, payload: bytes, ctx: Context, lookup: Lookup, members: Members
) -> Outcome:
    """One MQTT message from a mapper or an app → what to store, publish and report."""
    route = topics.match(topic)
    if route is None or route.action is Action.CLOUD_UPDATED:
        # cloud_updated from a local client is ignored on purpose: only the hub writes desired.
        return Outcome()
    if route.action is Action.UPLOAD:
        return _upload(topic, payload)
    if route.action is Action.MEMBERSHIP_GET:
        return _membership_get(ctx, payload, members)
    handler = {
        Action.TWIN_UPDATE: _twin_update,
        Action.TWIN_GET: _twin_get,
        Action.STATE_UPDATE: _state_update,
    }[route.action]
    return handler(route, payload, ctx, lookup)


# ---- changes from the hub ------------------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _desired(prop: dict[str, Any]) -> tuple[str, str | None] | None:
    """A property's cloud desired identity ``(value, stamp)``, or None when it has no value."""
    desired = _obj(prop.get("desired"))
    value = desired.get("value")
    if value is None:
        return None
    stamp = _obj(desired.get("metadata")).get("timestamp")
    # The hub stores desired values as strings; anything else is checked as its JSON text.
    text = value if isinstance(value, str) else json.dumps(value)
    return text, None if stamp is None else str(stamp)


def _seen_edge_versions(device: dict[str, Any]) -> dict[str, int]:
    """For each property, the edge counter of ``expected`` the hub last saw from us."""
    seen: dict[str, int] = {}
    for entry in _items(_obj(device.get("status")).get("twins")):
        observed = _obj(_obj(entry.get("observedDesired")).get("metadata"))
        edge = _obj(observed.get("version")).get("edge")
        if isinstance(entry.get("propertyName"), str) and type(edge) is int:
            seen[entry["propertyName"]] = edge
    return seen


def _model_types(model: dict[str, Any] | None) -> dict[str, str | None]:
    props = _items(_obj(_obj(model).get("spec")).get("properties"))
    return {p["name"]: p.get("type") for p in props if isinstance(p.get("name"), str)}


@dataclass
class _Reconciled:
    """The twins after a Device from the hub, and what happened on the way."""

    twins: dict[str, Twin]
    changes: dict[str, Change] = field(default_factory=dict)
    conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: TwinError | None = None

    def refuse(self, err: TwinError) -> None:
        self.error = self.error or err  # the first one is logged


def _reconcile(
    twins: Mapping[str, Twin], device: dict[str, Any], model: dict[str, Any] | None, now_ms: int
) -> _Reconciled:
    """Create a twin for each new property and apply each new desired value (a cloud write)."""
    out = _Reconciled(twins=dict(twins))
    types = _model_types(model)
    seen = _seen_edge_versions(device)
    with_desired: set[str] = set()
    for prop in _items(_obj(device.get("spec")).get("properties")):
        key = prop.get("name")
        if not isinstance(key, str) or not key_ok(key):
            out.refuse(errors.BadRequest(errors.BAD_KEY))
            continue
        old = out.twins.get(key)
        twin = old if old is not None else Twin(type=twin_type_of(types.get(key)))
        identity = _desired(prop)
        if identity is not None:
            with_desired.add(key)
        # Only a new identity is a write: a Device re-sent unchanged never reverts a local change.
        if identity is not None and identity != twin.cloud_desired:
            value = identity[0]
            if not value_ok(value):
                out.refuse(errors.BadRequest(errors.BAD_VALUE))
            elif (reason := check_value(twin.type, value)) is not None:
                out.refuse(errors.ValueTypeError(reason))
            else:
                twin, conflict = cloud_write(twin, value, identity, seen.get(key, 0), now_ms)
                if conflict is not None:
                    out.conflicts[key] = conflict
        if twin != old:
            out.twins[key] = twin
            out.changes[key] = (None if old is None or old.deleted else old, twin)
    for key, twin in out.twins.items():
        if key not in with_desired and twin.cloud_desired is not None:
            # Lost its desired value: expected stays, and the same value later is a write again.
            out.twins[key] = replace(twin, cloud_desired=None)
    return out


def apply_cloud(
    current: DeviceTwin | None,
    device: dict[str, Any] | None,
    model: dict[str, Any] | None,
    ctx: Context,
) -> Outcome:
    """The hub changed (or removed, when ``device`` is None) a Device bound to this node."""
    members_topic = topics.node_topic(ctx.node, "membership/updated")
    if device is None:
        if current is None:
            return Outcome()
        gone = MembershipUpdated(ctx.new_id(), ctx.now_ms, removed=(current,))
        return Outcome(removed=(current.id,), publish=(Publish(members_topic, gone.to_wire()),))

    meta = _obj(device.get("metadata"))
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "default")
    description = _obj(meta.get("annotations")).get("description")
    base = current or DeviceTwin(id=f"{namespace}/{name}", name=name, namespace=namespace)
    done = _reconcile(base.twins, device, model, ctx.now_ms)
    new = replace(
        base,
        description=description if isinstance(description, str) else "",
        twins=done.twins,
    )
    publish: list[Publish] = []
    reports: list[HubReport] = []
    if current is None:
        added = MembershipUpdated(ctx.new_id(), ctx.now_ms, added=(new,))
        publish.append(Publish(members_topic, added.to_wire()))
    error = done.error
    if done.changes:
        more, report = _twin_changed(new, done.changes, ctx.new_id(), ctx, done.conflicts)
        publish.extend(more)
        # The hub's Device wins on the edge all the same; only the report it could not take
        # (the mapper's twins and the hub's properties together past a limit) is not queued.
        if (problem := _unsendable(new, report)) is not None:
            error = errors.BadRequest(f"not reported to the hub: {problem}")
        else:
            reports.append(report)
    return Outcome(
        updated=(new,) if new != current else (),
        publish=tuple(publish),
        reports=tuple(reports),
        error=error,
    )
