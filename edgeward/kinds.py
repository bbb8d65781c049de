"""The resource kinds: their names, their validation and where they are synced.

Objects are Kubernetes-shaped dicts (``apiVersion, kind, metadata, spec,
status``). Device and DeviceModel follow KubeEdge's
``devices.kubeedge.io/v1beta1`` shape so that existing manifests apply
unchanged: the fields Edgeward uses are checked, every other field is kept as
written. Validation is pure and lists every bad field at once.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeward import storable
from edgeward.errors import FieldCause, InvalidObject

DEVICES_API = "devices.kubeedge.io/v1beta1"
CORE_API = "v1"
DEFAULT_NAMESPACE = "default"

#: Route of an object every node receives (DeviceModels).
ALL_NODES = "*"

#: Fields the store owns; a client may send them but never sets them.
SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
# The twin key and value alphabets of KubeEdge's MQTT protocol (KUBEEDGE-MQTT.md).
TWIN_KEY = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}\Z")
TWIN_VALUE = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,512}\Z")

#: v1beta1 DeviceModel property types (matched case-insensitively, stored upper case).
PROPERTY_TYPES = ("INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM")
ACCESS_MODES = ("ReadWrite", "ReadOnly")


def dns_label_problem(value: object) -> str | None:
    """Why ``value`` is not a DNS-1123 label, or None when it is one."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > 63:
        return "must be at most 63 characters"
    if not _DNS_LABEL.fullmatch(value):
        return (
            "must consist of lower case letters, digits and '-', starting and ending alphanumeric"
        )
    return None


def dns_subdomain_problem(value: object) -> str | None:
    """Why ``value`` is not a DNS-1123 subdomain, or None when it is one."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > 253:
        return "must be at most 253 characters"
    if not _DNS_SUBDOMAIN.fullmatch(value):
        return (
            "must consist of lower case letters, digits, '-' and '.', "
            "starting and ending alphanumeric"
        )
    return None


@dataclass(frozen=True)
class Kind:
    """A resource kind: how it is named, checked and routed to edge nodes."""

    name: str
    plural: str
    api_version: str
    namespaced: bool
    aliases: tuple[str, ...]
    check_spec: Callable[[dict[str, Any]], list[FieldCause]]
    route: Callable[[dict[str, Any]], str | None]
    name_problem: Callable[[object], str | None]

    def matches(self, word: str) -> bool:
        w = word.lower()
        return w in (self.name.lower(), self.plural, *self.aliases)


def _check_device(obj: dict[str, Any]) -> list[FieldCause]:
    causes: list[FieldCause] = []
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if not isinstance(spec, dict):
        return [FieldCause("spec", "must be an object")]
    ref = spec.get("deviceModelRef")
    if ref is not None:
        if not isinstance(ref, dict):
            causes.append(FieldCause("spec.deviceModelRef", "must be an object with a name"))
        elif (problem := dns_subdomain_problem(ref.get("name"))) is not None:
            causes.append(FieldCause("spec.deviceModelRef.name", problem))
    node = spec.get("nodeName")
    if node not in (None, "") and (problem := dns_subdomain_problem(node)) is not None:
        causes.append(FieldCause("spec.nodeName", problem))
    causes.extend(_check_properties(spec, _check_device_property))
    return causes


def _check_device_property(prop: dict[str, Any], where: str) -> list[FieldCause]:
    desired = prop.get("desired")
    if desired is None:
        return []
    if not isinstance(desired, dict):
        return [FieldCause(f"{where}.desired", "must be an object with a value")]
    value = desired.get("value")
    if value is None:
        return []
    if isinstance(value, bool):
        desired["value"] = value = "true" if value else "false"
    elif isinstance(value, int | float):
        desired["value"] = value = str(value)
    if not isinstance(value, str):
        return [FieldCause(f"{where}.desired.value", "must be a string")]
    if value and not TWIN_VALUE.fullmatch(value):
        return [
            FieldCause(
                f"{where}.desired.value",
                "must be at most 512 characters of letters, digits and -_.,:/@# "
                "(no spaces, quotes or braces)",
            )
        ]
    return []


def _check_model(obj: dict[str, Any]) -> list[FieldCause]:
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if not isinstance(spec, dict):
        return [FieldCause("spec", "must be an object")]
    return _check_properties(spec, _check_model_property)


def _check_model_property(prop: dict[str, Any], where: str) -> list[FieldCause]:
    causes: list[FieldCause] = []
    kind = prop.get("type")
    if kind is not None:
        if isinstance(kind, str) and kind.upper() in PROPERTY_TYPES:
            prop["type"] = kind.upper()
        else:
            causes.append(
                FieldCause(f"{where}.type", f"must be one of {', '.join(PROPERTY_TYPES)}")
            )
    mode = prop.get("accessMode")
    if mode is not None and mode not in ACCESS_MODES:
        causes.append(
            FieldCause(f"{where}.accessMode", f"must be one of {', '.join(ACCESS_MODES)}")
        )
    return causes


def _check_properties(
    spec: dict[str, Any], check_one: Callable[[dict[str, Any], str], list[FieldCause]]
) -> list[FieldCause]:
    props = spec.get("properties")
    if props is None:
        return []
    if not isinstance(props, list):
        return [FieldCause("spec.properties", "must be a list")]
    if len(props) > storable.MAX_TWINS:
        # the edge keeps at most this many twins per device, and the hub takes no more
        return [FieldCause("spec.properties", f"must have at most {storable.MAX_TWINS} properties")]
    causes: list[FieldCause] = []
    seen: set[str] = set()
    for i, prop in enumerate(props):
        where = f"spec.properties[{i}]"
        if not isinstance(prop, dict):
            causes.append(FieldCause(where, "must be an object"))
            continue
        name = prop.get("name")
        if not isinstance(name, str) or not TWIN_KEY.fullmatch(name):
            causes.append(
                FieldCause(
                    f"{where}.name",
                    "must be 1 to 128 characters of letters, digits and -_.,:/@#",
                )
            )
        elif name in seen:
            causes.append(FieldCause(f"{where}.name", f'duplicate property "{name}"'))
        else:
            seen.add(name)
        causes.extend(check_one(prop, where))
    return causes


def _check_node(obj: dict[str, Any]) -> list[FieldCause]:
    spec = obj.get("spec")
    if spec is None:
        obj["spec"] = {}
    elif not isinstance(spec, dict):
        return [FieldCause("spec", "must be an object")]
    return []


def _device_route(obj: dict[str, Any]) -> str | None:
    return obj.get("spec", {}).get("nodeName") or None


DEVICE = Kind(
    name="Device",
    plural="devices",
    api_version=DEVICES_API,
    namespaced=True,
    aliases=("device", "dev", "devs"),
    check_spec=_check_device,
    route=_device_route,
    name_problem=dns_label_problem,
)
DEVICE_MODEL = Kind(
    name="DeviceModel",
    plural="devicemodels",
    api_version=DEVICES_API,
    namespaced=True,
    aliases=("devicemodel", "model", "models", "dm"),
    check_spec=_check_model,
    route=lambda obj: ALL_NODES,
    name_problem=dns_label_problem,
)
NODE = Kind(
    name="Node",
    plural="nodes",
    api_version=CORE_API,
    namespaced=False,
    aliases=("node", "no"),
    check_spec=_check_node,
    # A Node object is the hub's record of the node; it is not synced down.
    route=lambda obj: None,
    name_problem=dns_subdomain_problem,
)

KINDS: tuple[Kind, ...] = (DEVICE, DEVICE_MODEL, NODE)


def kind_named(word: str) -> Kind:
    """The kind a user means by ``word`` (kind, plural or alias, any case)."""
    for kind in KINDS:
        if kind.matches(word):
            return kind
    known = ", ".join(k.plural for k in KINDS)
    raise KeyError(f'unknown resource type "{word}" (known: {known})')


def kind_of_manifest(obj: object) -> Kind:
    """The kind a manifest declares; raises InvalidObject when it declares none we know."""
    if not isinstance(obj, dict):
        raise InvalidObject("object", "", [FieldCause("", "a manifest must be a mapping")])
    word = obj.get("kind")
    if not isinstance(word, str):
        raise InvalidObject("object", "", [FieldCause("kind", "is required")])
    for kind in KINDS:
        if kind.name == word:
            return kind
    known = ", ".join(k.name for k in KINDS)
    raise InvalidObject(word, "", [FieldCause("kind", f'unknown kind "{word}" (known: {known})')])


def normalize(kind: Kind, obj: object, namespace: str | None = None) -> dict[str, Any]:
    """Check ``obj`` as a ``kind`` object and return it in stored form.

    Fills ``apiVersion``, ``kind`` and the namespace, drops the fields the
    store owns and ``status`` (which only the hub and the edge write).
    ``namespace``, when given, is where the object is being written: a
    manifest naming another namespace is refused. Raises InvalidObject
    listing every problem.
    """
    name_hint = ""
    if not isinstance(obj, dict):
        raise InvalidObject(kind.name, "", [FieldCause("", "must be a JSON object")])
    # checks fill defaults in place (e.g. desired values become strings): work on a copy
    out: dict[str, Any] = copy.deepcopy({k: v for k, v in obj.items() if k != "status"})
    causes: list[FieldCause] = []
    api = out.setdefault("apiVersion", kind.api_version)
    if api != kind.api_version:
        causes.append(FieldCause("apiVersion", f'must be "{kind.api_version}"'))
    if out.setdefault("kind", kind.name) != kind.name:
        causes.append(FieldCause("kind", f'must be "{kind.name}"'))
    meta = out.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidObject(kind.name, "", [*causes, FieldCause("metadata", "must be an object")])
    meta = {k: v for k, v in meta.items() if k not in SERVER_METADATA}
    out["metadata"] = meta
    name = meta.get("name")
    name_hint = name if isinstance(name, str) else ""
    if (problem := kind.name_problem(name)) is not None:
        causes.append(FieldCause("metadata.name", problem))
    if kind.namespaced:
        ns = meta.get("namespace")
        if ns in (None, ""):
            ns = namespace or DEFAULT_NAMESPACE
        if (problem := dns_label_problem(ns)) is not None:
            causes.append(FieldCause("metadata.namespace", problem))
        elif namespace is not None and ns != namespace:
            causes.append(
                FieldCause(
                    "metadata.namespace",
                    f'is "{ns}" but the object is being written to namespace "{namespace}"',
                )
            )
        meta["namespace"] = ns
    else:
        meta.pop("namespace", None)
    for field in ("labels", "annotations"):
        causes.extend(_check_string_map(meta, field))
    causes.extend(kind.check_spec(out))
    if causes:
        raise InvalidObject(kind.name, name_hint, causes)
    return out


def _check_string_map(meta: dict[str, Any], field: str) -> list[FieldCause]:
    value = meta.get(field)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [FieldCause(f"metadata.{field}", "must be a map of strings")]
    causes = []
    for key, val in value.items():
        if not isinstance(key, str):
            causes.append(FieldCause(f"metadata.{field}.{key}", "key must be a string"))
            continue
        if not isinstance(val, str):
            causes.append(FieldCause(f"metadata.{field}.{key}", "value must be a string"))
        elif field == "labels" and val and (len(val) > 63 or not _LABEL_NAME.fullmatch(val)):
            causes.append(
                FieldCause(
                    f"metadata.labels.{key}",
                    "value must be at most 63 letters, digits, '-', '_' or '.', "
                    "starting and ending alphanumeric",
                )
            )
        if field == "labels" and (problem := _label_key_problem(key)) is not None:
            causes.append(FieldCause(f"metadata.labels.{key}", problem))
    return causes


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and dns_subdomain_problem(prefix) is not None:
        return "key prefix must be a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            "key must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending alphanumeric"
        )
    return None


def object_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of a stored object; namespace is "" for cluster-scoped kinds."""
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def resource_version(obj: dict[str, Any]) -> int:
    """The object's resourceVersion as an integer (0 when it has none)."""
    rv = obj.get("metadata", {}).get("resourceVersion")
    try:
        return int(rv)
    except (TypeError, ValueError):
        return 0
