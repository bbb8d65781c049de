"""Resource kinds: KubeEdge manifests normalize unchanged, and every bad field is reported."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.errors import InvalidObject
from edgeward.kinds import (
    ALL_NODES,
    DEVICE,
    DEVICE_MODEL,
    DEVICES_API,
    KINDS,
    NODE,
    Kind,
    kind_named,
    kind_of_manifest,
    normalize,
    object_key,
    resource_version,
)

# A KubeEdge v1beta1 Device as the KubeEdge docs and examples write it (Modbus thermometer).
DEVICE_MANIFEST = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: beta1-device
  namespace: default
  labels:
    model: temperature-model
    app.kubernetes.io/part-of: plant-3
  annotations:
    kubeedge.io/owner: "line 3, cell 7"
  uid: 5f0c6e1c-2f3e-4a43-9d0b-0d1b3c1a2b3c
  resourceVersion: "4711"
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 3
spec:
  deviceModelRef:
    name: temperature-model
  nodeName: edge-node-1
  protocol:
    protocolName: modbus
    configData:
      serialPort: /dev/ttyS0
      baudRate: 9600
      dataBits: 8
      parity: even
      stopBits: 1
      slaveID: 1
  properties:
    - name: temperature
      collectCycle: 10000
      reportCycle: 10000
      reportToCloud: true
      desired:
        value: 20
        metadata:
          type: int
      visitors:
        protocolName: modbus
        configData:
          register: HoldingRegister
          offset: 2
          limit: 1
          scale: 1
          isSwap: true
          isRegisterSwap: true
      pushMethod:
        mqtt:
          address: tcp://127.0.0.1:1883
          topic: temperature
          qos: 0
          retained: false
    - name: temperature-enable
      desired:
        value: true
      visitors:
        protocolName: modbus
        configData:
          register: CoilRegister
          offset: 1
          limit: 1
status:
  twins:
    - propertyName: temperature
      reported:
        value: "21"
        metadata:
          timestamp: "1714557600000"
      observedDesired:
        value: "20"
"""

DEVICE_MODEL_MANIFEST = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: temperature-model
  namespace: default
spec:
  protocol: modbus
  properties:
    - name: temperature
      description: temperature in degree celsius
      type: int
      accessMode: ReadWrite
      maximum: "100"
      minimum: "1"
      unit: degree celsius
    - name: temperature-enable
      description: enable data collection of temperature sensor
      type: Boolean
      accessMode: ReadWrite
    - name: serial
      description: the sensor's serial number
      type: STRING
      accessMode: ReadOnly
"""


def device_manifest() -> dict[str, Any]:
    return yaml.safe_load(DEVICE_MANIFEST)


def model_manifest() -> dict[str, Any]:
    return yaml.safe_load(DEVICE_MODEL_MANIFEST)


def minimal_device(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "thermo-1"}, "spec": spec}


def causes(kind: Kind, obj: object, namespace: str | None = None) -> dict[str, str]:
    """The field → message map of the InvalidObject normalize raises (fails when it accepts)."""
    with pytest.raises(InvalidObject) as info:
        normalize(kind, obj, namespace)
    return {c.field: c.message for c in info.value.causes}


def device_with_property(**prop: Any) -> dict[str, Any]:
    return minimal_device(properties=[{"name": "temp", **prop}])


# -- real manifests --------------------------------------------------------------


def test_kubeedge_device_manifest_keeps_every_unknown_field() -> None:
    """A KubeEdge Device normalizes with its protocol, visitors, cycles and pushMethod intact."""
    manifest = device_manifest()
    out = normalize(DEVICE, copy.deepcopy(manifest))
    assert out["spec"]["protocol"] == manifest["spec"]["protocol"]
    assert out["spec"]["deviceModelRef"] == {"name": "temperature-model"}
    assert out["spec"]["nodeName"] == "edge-node-1"
    temp, enable = out["spec"]["properties"]
    want_temp = manifest["spec"]["properties"][0]
    for name in ("collectCycle", "reportCycle", "reportToCloud", "visitors", "pushMethod"):
        assert temp[name] == want_temp[name]
    assert temp["desired"] == {"value": "20", "metadata": {"type": "int"}}
    assert enable["desired"] == {"value": "true"}
    assert enable["visitors"] == manifest["spec"]["properties"][1]["visitors"]
    assert out["metadata"]["labels"] == manifest["metadata"]["labels"]
    assert out["metadata"]["annotations"] == manifest["metadata"]["annotations"]


def test_kubeedge_device_manifest_is_stored_without_server_fields_and_status() -> None:
    """Status and the metadata the store owns (uid, resourceVersion, …) are dropped."""
    out = normalize(DEVICE, device_manifest())
    assert "status" not in out
    assert out["metadata"] == {
        "name": "beta1-device",
        "namespace": "default",
        "labels": {"model": "temperature-model", "app.kubernetes.io/part-of": "plant-3"},
        "annotations": {"kubeedge.io/owner": "line 3, cell 7"},
    }
    assert out["apiVersion"] == DEVICES_API
    assert out["kind"] == "Device"


def test_kubeedge_device_model_manifest_keeps_every_unknown_field() -> None:
    """A KubeEdge DeviceModel keeps description, min/max and unit; types become upper case."""
    manifest = model_manifest()
    out = normalize(DEVICE_MODEL, copy.deepcopy(manifest))
    assert out["spec"]["protocol"] == "modbus"
    props = out["spec"]["properties"]
    assert [p["type"] for p in props] == ["INT", "BOOLEAN", "STRING"]
    for got, want in zip(props, manifest["spec"]["properties"], strict=True):
        assert {k: v for k, v in got.items() if k != "type"} == {
            k: v for k, v in want.items() if k != "type"
        }
    assert props[0]["maximum"] == "100"
    assert props[0]["unit"] == "degree celsius"


def test_normalize_is_idempotent() -> None:
    """A stored object normalizes to itself."""
    for kind, manifest in ((DEVICE, device_manifest()), (DEVICE_MODEL, model_manifest())):
        once = normalize(kind, manifest)
        assert normalize(kind, copy.deepcopy(once)) == once


def test_normalize_leaves_its_argument_unchanged() -> None:
    """normalize returns the stored form without rewriting the caller's manifest."""
    for kind, manifest in ((DEVICE, device_manifest()), (DEVICE_MODEL, model_manifest())):
        before = copy.deepcopy(manifest)
        normalize(kind, manifest)
        assert manifest == before


def test_api_version_and_kind_are_filled_in() -> None:
    """A manifest without apiVersion and kind gets the kind's own."""
    out = normalize(DEVICE, minimal_device())
    assert out["apiVersion"] == DEVICES_API
    assert out["kind"] == "Device"
    node = normalize(NODE, {"metadata": {"name": "edge-1"}})
    assert node["apiVersion"] == "v1"
    assert node["kind"] == "Node"
    assert node["spec"] == {}


def test_missing_spec_becomes_empty() -> None:
    """An object without a spec is stored with an empty one."""
    for kind in KINDS:
        assert normalize(kind, {"metadata": {"name": "x"}})["spec"] == {}


def test_wrong_api_version_or_kind_is_refused() -> None:
    """A manifest of another apiVersion or kind is refused, naming both fields."""
    found = causes(
        DEVICE,
        {"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "DeviceModel", **minimal_device()},
    )
    assert set(found) == {"apiVersion", "kind"}
    assert DEVICES_API in found["apiVersion"]


# -- namespaces ------------------------------------------------------------------


def test_namespace_defaults_to_default() -> None:
    """A namespaced object without a namespace goes to "default"."""
    assert normalize(DEVICE, minimal_device())["metadata"]["namespace"] == "default"
    empty = {"metadata": {"name": "thermo-1", "namespace": ""}}
    assert normalize(DEVICE, empty)["metadata"]["namespace"] == "default"


def test_namespace_defaults_to_the_one_written_to() -> None:
    """An object without a namespace takes the namespace it is written to."""
    assert normalize(DEVICE, minimal_device(), "plant-3")["metadata"]["namespace"] == "plant-3"


def test_namespace_matching_the_one_written_to_is_accepted() -> None:
    """A manifest naming the namespace it is written to is accepted."""
    obj = {"metadata": {"name": "thermo-1", "namespace": "plant-3"}}
    assert normalize(DEVICE, obj, "plant-3")["metadata"]["namespace"] == "plant-3"


def test_namespace_mismatch_is_refused() -> None:
    """A manifest naming another namespace than the one it is written to is refused."""
    obj = {"metadata": {"name": "thermo-1", "namespace": "plant-3"}}
    found = causes(DEVICE, obj, "plant-4")
    assert set(found) == {"metadata.namespace"}
    assert "plant-3" in found["metadata.namespace"]
    assert "plant-4" in found["metadata.namespace"]


@pytest.mark.parametrize("namespace", ["Plant", "plant_3", "-plant", "p" * 64, 7])
def test_bad_namespace_is_refused(namespace: object) -> None:
    """A namespace that is not a DNS-1123 label is refused."""
    obj = {"metadata": {"name": "thermo-1", "namespace": namespace}}
    assert "metadata.namespace" in causes(DEVICE, obj)


def test_cluster_scoped_node_drops_namespace() -> None:
    """A Node is cluster-scoped: any namespace in its manifest is dropped."""
    out = normalize(NODE, {"metadata": {"name": "edge-1", "namespace": "default"}}, None)
    assert "namespace" not in out["metadata"]
    assert object_key(out) == ("Node", "", "edge-1")


def test_node_name_may_be_a_dns_subdomain() -> None:
    """Node names are DNS subdomains (dots allowed), unlike device names."""
    assert normalize(NODE, {"metadata": {"name": "edge-1.plant-3.example"}})
    assert "metadata.name" in causes(DEVICE, {"metadata": {"name": "edge-1.plant-3"}})


def test_node_status_is_stripped() -> None:
    """A client cannot write a Node's status; the hub and the edge own it."""
    out = normalize(NODE, {"metadata": {"name": "edge-1"}, "status": {"conditions": []}})
    assert "status" not in out


# -- names and labels ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "thermo-1", "0", "a" * 63, "1-2-3"],
)
def test_good_names_are_accepted(name: str) -> None:
    """DNS-1123 labels up to 63 characters are valid object names."""
    assert normalize(DEVICE, {"metadata": {"name": name}})["metadata"]["name"] == name


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        7,
        "Thermo",
        "THERMO",
        "thermo_1",
        "thermo.1",
        "-thermo",
        "thermo-",
        "a" * 64,
        "ther mo",
        "thermö",
        "thermo-1\n",
    ],
)
def test_bad_names_are_refused(name: object) -> None:
    """Names that are not DNS-1123 labels (case, length, characters) are refused."""
    obj = {"metadata": {} if name is None else {"name": name}}
    assert "metadata.name" in causes(DEVICE, obj)


def test_too_long_name_says_why() -> None:
    """A name over 63 characters is refused because of its length."""
    assert "63" in causes(DEVICE, {"metadata": {"name": "a" * 64}})["metadata.name"]


def test_metadata_must_be_an_object() -> None:
    """A manifest without a metadata object is refused."""
    assert "metadata" in causes(DEVICE, {"spec": {}})
    assert "metadata" in causes(DEVICE, {"metadata": ["name", "x"]})


@pytest.mark.parametrize(
    "labels",
    [
        {"app": "thermo"},
        {"app.kubernetes.io/name": "thermo"},
        {"example.com/tier": ""},
        {"a": "A_b.c-D"},
        {"k" * 63: "v" * 63},
    ],
)
def test_good_labels_are_accepted(labels: dict[str, str]) -> None:
    """Kubernetes-valid label keys (with optional DNS prefix) and values are kept."""
    obj = {"metadata": {"name": "thermo-1", "labels": labels}}
    assert normalize(DEVICE, obj)["metadata"]["labels"] == labels


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"app": 1}, "metadata.labels.app"),
        ({"app": "has space"}, "metadata.labels.app"),
        ({"app": "-lead"}, "metadata.labels.app"),
        ({"app": "v" * 64}, "metadata.labels.app"),
        ({"app": "value\n"}, "metadata.labels.app"),
        ({"bad key": "x"}, "metadata.labels.bad key"),
        ({"": "x"}, "metadata.labels."),
        ({"k" * 64: "x"}, "metadata.labels." + "k" * 64),
        ({"Bad_Prefix/x": "y"}, "metadata.labels.Bad_Prefix/x"),
        ({"a/b/c": "y"}, "metadata.labels.a/b/c"),
        ({"/app": "y"}, "metadata.labels./app"),
        ({"example.com/": "y"}, "metadata.labels.example.com/"),
    ],
)
def test_bad_labels_are_refused(labels: dict[str, Any], field: str) -> None:
    """Label keys and values that Kubernetes would refuse are refused, naming the label."""
    assert field in causes(DEVICE, {"metadata": {"name": "thermo-1", "labels": labels}})


def test_labels_must_be_a_map() -> None:
    """Labels and annotations must be maps of strings."""
    found = causes(DEVICE, {"metadata": {"name": "thermo-1", "labels": ["a"], "annotations": "x"}})
    assert set(found) == {"metadata.labels", "metadata.annotations"}


def test_annotation_values_must_be_strings_but_are_otherwise_free() -> None:
    """Annotation values may hold any text, but must be strings."""
    free = {"metadata": {"name": "thermo-1", "annotations": {"note": "any {text} at all"}}}
    assert normalize(DEVICE, free)
    bad = {"metadata": {"name": "thermo-1", "annotations": {"n": 1}}}
    assert "metadata.annotations.n" in causes(DEVICE, bad)


def test_non_string_label_key_is_refused() -> None:
    """A label key that is not a string (YAML ``1: x``) is refused, not a crash."""
    manifest = yaml.safe_load("metadata:\n  name: thermo-1\n  labels:\n    1: x\n")
    assert any(f.startswith("metadata.labels") for f in causes(DEVICE, manifest))


# -- device properties -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (21, "21"),
        (-3, "-3"),
        (21.5, "21.5"),
        (True, "true"),
        (False, "false"),
        ("on", "on"),
        ("", ""),
        ("a-b_c.d,e:f/g@h#i", "a-b_c.d,e:f/g@h#i"),
        ("x" * 512, "x" * 512),
    ],
)
def test_desired_values_are_stored_as_twin_strings(value: object, stored: str) -> None:
    """Numbers and booleans become the strings a twin carries ("21", "true")."""
    out = normalize(DEVICE, device_with_property(desired={"value": value}))
    assert out["spec"]["properties"][0]["desired"]["value"] == stored


@pytest.mark.parametrize(
    "value",
    [
        "21 C",
        '"21"',
        "{21}",
        "[1]",
        "it's",
        "x" * 513,
        "21\n",
        "tab\t",
        ["21"],
        {"v": 1},
    ],
)
def test_bad_desired_values_are_refused(value: object) -> None:
    """Desired values with spaces, quotes, braces, control characters or >512 chars are refused."""
    found = causes(DEVICE, device_with_property(desired={"value": value}))
    assert set(found) == {"spec.properties[0].desired.value"}


def test_desired_without_value_is_accepted() -> None:
    """A property may have no desired value, or a desired object without one."""
    assert normalize(DEVICE, device_with_property())
    assert normalize(DEVICE, device_with_property(desired={}))
    assert normalize(DEVICE, device_with_property(desired={"value": None}))


def test_desired_must_be_an_object() -> None:
    """A desired that is not an object is refused."""
    assert "spec.properties[0].desired" in causes(DEVICE, device_with_property(desired="21"))


@pytest.mark.parametrize(
    "name",
    ["temperature", "Temp_1", "a", "a-b.c,d:e/f@g#h", "x" * 128],
)
def test_good_property_names_are_accepted(name: str) -> None:
    """Property names use the twin key alphabet, up to 128 characters."""
    assert normalize(DEVICE, minimal_device(properties=[{"name": name}]))


@pytest.mark.parametrize(
    "name",
    [None, "", 7, "has space", "x" * 129, 'q"uote', "br{ace}", "temp\n", "dollar$"],
)
def test_bad_property_names_are_refused(name: object) -> None:
    """Property names outside the twin key alphabet, empty or over 128 chars are refused."""
    prop = {} if name is None else {"name": name}
    assert "spec.properties[0].name" in causes(DEVICE, minimal_device(properties=[prop]))


def test_duplicate_property_names_are_refused() -> None:
    """Two properties with one name are refused at the second."""
    props = [{"name": "temp"}, {"name": "hum"}, {"name": "temp"}]
    found = causes(DEVICE, minimal_device(properties=props))
    assert set(found) == {"spec.properties[2].name"}
    assert "duplicate" in found["spec.properties[2].name"]


def test_properties_must_be_a_list_of_objects() -> None:
    """spec.properties must be a list, and each entry an object."""
    assert "spec.properties" in causes(DEVICE, minimal_device(properties={"name": "temp"}))
    assert "spec.properties[1]" in causes(DEVICE, minimal_device(properties=[{"name": "a"}, "b"]))


def test_spec_must_be_an_object() -> None:
    """A spec that is not an object is refused for every kind."""
    for kind in KINDS:
        assert "spec" in causes(kind, {"metadata": {"name": "x"}, "spec": ["x"]})


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"nodeName": "Edge_1"}, "spec.nodeName"),
        ({"nodeName": 3}, "spec.nodeName"),
        ({"deviceModelRef": "temperature-model"}, "spec.deviceModelRef"),
        ({"deviceModelRef": {}}, "spec.deviceModelRef.name"),
        ({"deviceModelRef": {"name": "Temperature"}}, "spec.deviceModelRef.name"),
    ],
)
def test_bad_device_references_are_refused(spec: dict[str, Any], field: str) -> None:
    """A device's nodeName and deviceModelRef must name valid objects."""
    assert field in causes(DEVICE, minimal_device(**spec))


def test_unbound_device_is_accepted() -> None:
    """A device with no or an empty nodeName is accepted (it is not routed anywhere)."""
    assert normalize(DEVICE, minimal_device())
    out = normalize(DEVICE, minimal_device(nodeName=""))
    assert DEVICE.route(out) is None


def test_routes() -> None:
    """Devices route to their node, DeviceModels to every node, Nodes nowhere."""
    assert DEVICE.route(normalize(DEVICE, minimal_device(nodeName="edge-1"))) == "edge-1"
    assert DEVICE_MODEL.route(normalize(DEVICE_MODEL, model_manifest())) == ALL_NODES
    assert NODE.route(normalize(NODE, {"metadata": {"name": "edge-1"}})) is None


# -- model properties ------------------------------------------------------------


def model_with_property(**prop: Any) -> dict[str, Any]:
    return {"metadata": {"name": "temperature-model"}, "spec": {"properties": [prop]}}


@pytest.mark.parametrize(
    ("given_type", "stored"),
    [
        ("int", "INT"),
        ("Float", "FLOAT"),
        ("double", "DOUBLE"),
        ("STRING", "STRING"),
        ("boolean", "BOOLEAN"),
        ("bytes", "BYTES"),
        ("Stream", "STREAM"),
    ],
)
def test_model_property_types_are_upper_cased(given_type: str, stored: str) -> None:
    """Property types match case-insensitively and are stored upper case."""
    out = normalize(DEVICE_MODEL, model_with_property(name="temp", type=given_type))
    assert out["spec"]["properties"][0]["type"] == stored


@pytest.mark.parametrize("given_type", ["integer", "bool", "", 1, ["INT"], "INT "])
def test_unknown_model_property_types_are_refused(given_type: object) -> None:
    """A property type outside the v1beta1 list is refused, naming the known types."""
    found = causes(DEVICE_MODEL, model_with_property(name="temp", type=given_type))
    assert "INT" in found["spec.properties[0].type"]


@pytest.mark.parametrize("mode", ["ReadWrite", "ReadOnly"])
def test_access_modes_are_accepted(mode: str) -> None:
    """ReadWrite and ReadOnly are the access modes."""
    assert normalize(DEVICE_MODEL, model_with_property(name="temp", accessMode=mode))


@pytest.mark.parametrize("mode", ["readwrite", "WriteOnly", "", 1])
def test_bad_access_modes_are_refused(mode: object) -> None:
    """Any other access mode (case included) is refused."""
    assert "spec.properties[0].accessMode" in causes(
        DEVICE_MODEL, model_with_property(name="temp", accessMode=mode)
    )


def test_model_property_names_are_checked() -> None:
    """Model property names follow the same twin key rules as device properties."""
    found = causes(
        DEVICE_MODEL,
        {"metadata": {"name": "m"}, "spec": {"properties": [{"name": "a b"}, {}]}},
    )
    assert set(found) == {"spec.properties[0].name", "spec.properties[1].name"}


# -- every problem at once -------------------------------------------------------


def test_every_problem_is_listed_at_once() -> None:
    """One refusal lists every bad field, so the user fixes the manifest in one go."""
    obj = {
        "apiVersion": "devices.kubeedge.io/v1alpha2",
        "kind": "Device",
        "metadata": {
            "name": "Thermo_1",
            "namespace": "plant-3",
            "labels": {"bad key": "ok", "ok": "bad value"},
        },
        "spec": {
            "nodeName": "Edge_1",
            "deviceModelRef": {"name": ""},
            "properties": [
                {"name": "temp", "desired": {"value": "21 C"}},
                {"name": "temp"},
                {"name": "has space", "desired": "x"},
                "not-an-object",
            ],
        },
    }
    with pytest.raises(InvalidObject) as info:
        normalize(DEVICE, obj, "plant-4")
    fields = [c.field for c in info.value.causes]
    assert sorted(fields) == sorted(
        [
            "apiVersion",
            "metadata.name",
            "metadata.namespace",
            "metadata.labels.bad key",
            "metadata.labels.ok",
            "spec.nodeName",
            "spec.deviceModelRef.name",
            "spec.properties[0].desired.value",
            "spec.properties[1].name",
            "spec.properties[2].name",
            "spec.properties[2].desired",
            "spec.properties[3]",
        ]
    )
    assert info.value.kind == "Device"
    assert info.value.name == "Thermo_1"
    message = str(info.value)
    assert message.startswith('Device "Thermo_1" is invalid: ')
    assert all(f in message for f in fields)


def test_every_model_problem_is_listed_at_once() -> None:
    """A DeviceModel's type, access mode and name problems are reported together."""
    obj = {
        "metadata": {"name": "temperature-model"},
        "spec": {
            "properties": [
                {"name": "temp", "type": "integer", "accessMode": "rw"},
                {"name": "temp", "type": "int"},
            ]
        },
    }
    assert set(causes(DEVICE_MODEL, obj)) == {
        "spec.properties[0].type",
        "spec.properties[0].accessMode",
        "spec.properties[1].name",
    }


def test_non_object_is_refused() -> None:
    """Something that is not a mapping is refused as a whole."""
    for thing in (None, [], "Device", 3):
        assert "" in causes(DEVICE, thing)


# -- kinds by name ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "kind"),
    [
        ("Device", DEVICE),
        ("device", DEVICE),
        ("devices", DEVICE),
        ("DEVICES", DEVICE),
        ("dev", DEVICE),
        ("devs", DEVICE),
        ("DeviceModel", DEVICE_MODEL),
        ("devicemodels", DEVICE_MODEL),
        ("model", DEVICE_MODEL),
        ("models", DEVICE_MODEL),
        ("dm", DEVICE_MODEL),
        ("Node", NODE),
        ("nodes", NODE),
        ("no", NODE),
    ],
)
def test_kind_named_knows_names_plurals_and_aliases(word: str, kind: Kind) -> None:
    """Users may name a kind by its name, plural or alias, in any case."""
    assert kind_named(word) is kind


@pytest.mark.parametrize("word", ["pods", "", "devicez", "d"])
def test_kind_named_refuses_unknown_words(word: str) -> None:
    """An unknown resource type raises KeyError listing the known ones."""
    with pytest.raises(KeyError) as info:
        kind_named(word)
    assert "devices" in str(info.value)


def test_kind_of_manifest() -> None:
    """A manifest's kind field selects the kind, by its exact name."""
    assert kind_of_manifest(device_manifest()) is DEVICE
    assert kind_of_manifest(model_manifest()) is DEVICE_MODEL
    assert kind_of_manifest({"kind": "Node"}) is NODE


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ([], ""),
        ("kind: Device", ""),
        ({}, "kind"),
        ({"kind": 3}, "kind"),
        ({"kind": "Pod"}, "kind"),
        ({"kind": "device"}, "kind"),
    ],
)
def test_kind_of_manifest_errors(manifest: object, field: str) -> None:
    """A manifest that is not a mapping, or declares no known kind, is refused."""
    with pytest.raises(InvalidObject) as info:
        kind_of_manifest(manifest)
    assert [c.field for c in info.value.causes] == [field]


def test_unknown_kind_lists_known_kinds() -> None:
    """The refusal of an unknown kind names the kinds that exist."""
    with pytest.raises(InvalidObject) as info:
        kind_of_manifest({"kind": "Pod"})
    assert "Device" in str(info.value)
    assert "DeviceModel" in str(info.value)


# -- keys and versions -----------------------------------------------------------


def test_object_key() -> None:
    """An object's key is (kind, namespace, name), with "" for cluster-scoped objects."""
    assert object_key(normalize(DEVICE, device_manifest())) == ("Device", "default", "beta1-device")
    assert object_key({"kind": "Node", "metadata": {"name": "edge-1"}}) == ("Node", "", "edge-1")


@pytest.mark.parametrize(
    ("obj", "rv"),
    [
        ({"metadata": {"resourceVersion": "42"}}, 42),
        ({"metadata": {"resourceVersion": 42}}, 42),
        ({"metadata": {}}, 0),
        ({}, 0),
        ({"metadata": {"resourceVersion": "abc"}}, 0),
        ({"metadata": {"resourceVersion": None}}, 0),
        ({"metadata": {"resourceVersion": [1]}}, 0),
    ],
)
def test_resource_version(obj: dict[str, Any], rv: int) -> None:
    """resourceVersion reads as an integer, 0 when absent or not a number."""
    assert resource_version(obj) == rv


# -- property --------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["thermo-1", "Thermo", "", "a" * 64, "edge.1"]) | json_scalars
property_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["temp", "temp", "a b"]) | json_scalars,
        "type": st.sampled_from(["int", "FLOAT", "bogus"]) | json_scalars,
        "accessMode": st.sampled_from(["ReadWrite", "ReadOnly"]) | json_scalars,
        "desired": st.fixed_dictionaries({}, optional={"value": json_scalars}) | json_values,
    },
)
manifests = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from([DEVICES_API, "v1"]) | json_values,
        "kind": st.sampled_from([k.name for k in KINDS]) | json_values,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": names,
                "namespace": names,
                "labels": st.dictionaries(st.text(max_size=10), json_scalars, max_size=3)
                | json_values,
                "annotations": json_values,
                "uid": json_values,
                "resourceVersion": json_values,
            },
        )
        | json_values,
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "nodeName": names,
                "deviceModelRef": st.fixed_dictionaries({}, optional={"name": names}) | json_values,
                "properties": st.lists(property_like | json_values, max_size=4) | json_values,
            },
        )
        | json_values,
        "status": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), manifests | json_values, st.none() | names)
def test_normalize_returns_a_dict_or_raises_invalid_object(
    kind: Kind, obj: Any, namespace: Any
) -> None:
    """Whatever a client sends, normalize returns a stored object or raises InvalidObject."""
    try:
        out = normalize(kind, obj, namespace if isinstance(namespace, str) else None)
    except InvalidObject as exc:
        assert exc.causes
    else:
        assert isinstance(out, dict)
        assert out["kind"] == kind.name
        assert "status" not in out
        assert not {"uid", "resourceVersion"} & set(out["metadata"])
