"""Device twins and KubeEdge's MQTT twin protocol, pure: no I/O, no clock, no threads.

The edge daemon hands this package a message (or a Device from the hub), the
current twin state and a :class:`Context` (node name, the time, an id
source); it gets back an :class:`Outcome`: new states to persist, MQTT
messages to publish after the commit, and rows for the hub's outbox.
``KUBEEDGE-MQTT.md`` (beside the shared DESIGN.md) is the protocol this implements.

The model (``model.py``)::

    DeviceTwin  id "<namespace>/<name>", name, namespace, description,
                state (as the mapper sent it), last_online (RFC 3339), twins
    Twin        type (string | int | float | boolean, fixed at creation), optional,
                expected / actual: TwinValue(value, timestamp ms) or None,
                expected_version / actual_version: Version(cloud, edge),
                deleted (soft delete), cloud_desired (identity of the last hub write)

Version vectors. Each field (expected, actual) counts its writes per side:

- a mapper's update bumps ``edge`` of every field it sends, even with the
  same value (a new twin's fields start at {cloud: 0, edge: 1});
- a mapper's delete of an optional twin is soft: values go, type and
  counters stay (the ``edge`` counter of each field that had a value is
  bumped), and a later update revives it;
- a cloud write bumps ``expected_version.cloud``. It happens only when the
  Device's desired identity (value, timestamp) is new, and it always wins;
  when the hub had not seen our latest ``expected_version.edge`` the local
  value it replaces is reported as a conflict rather than silently dropped;
- counters never go down; versions never reach mappers, only the hub.

Entry points (``engine.py``):

- :func:`handle_message` — one MQTT message on a subscribed topic
  (:data:`SUBSCRIPTIONS`) from a mapper or an app. Never raises for any topic
  or payload; a refusal is ``Outcome.error`` plus KubeEdge's error result.
  A refused message changes nothing (all or nothing).
- :func:`apply_cloud` — the hub added, changed or removed a Device bound to
  this node.
- :func:`twin_type_of` / :func:`check_value` — DeviceModel types and the
  value checks, also useful to the hub.

Modules: ``values`` (alphabets, types), ``gojson`` (decoding as Go does),
``payloads`` (every MQTT payload), ``topics``, ``rules`` (how twins change),
``reports`` (rows for the hub), ``errors`` (the refusals and their texts).
"""

from devicetwin.engine import apply_cloud, handle_message
from devicetwin.errors import BadRequest, NotFound, TwinError, ValueTypeError
from devicetwin.model import DeviceTwin, Twin, TwinValue, Version
from devicetwin.outcome import Context, HubReport, Outcome, Publish
from devicetwin.topics import SUBSCRIPTIONS
from devicetwin.values import check_value, twin_type_of

__all__ = [
    "SUBSCRIPTIONS",
    "BadRequest",
    "Context",
    "DeviceTwin",
    "HubReport",
    "NotFound",
    "Outcome",
    "Publish",
    "Twin",
    "TwinError",
    "TwinValue",
    "ValueTypeError",
    "Version",
    "apply_cloud",
    "check_value",
    "handle_message",
    "twin_type_of",
]
