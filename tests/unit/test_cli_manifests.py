"""Reading manifests for apply and delete -f: documents, errors and hostile input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from edgeward.cli import manifests
from edgeward.cli.manifests import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    Document,
    ManifestError,
    expand_paths,
    identify,
    load_documents,
    read_manifests,
    read_source,
)
from edgeward.kinds import DEVICE, NODE

KUBEEDGE = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermostat
spec:
  properties:
    - name: target
      type: INT
      accessMode: ReadWrite
---
---
# only a comment
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermo
spec:
  deviceModelRef:
    name: thermostat
  nodeName: edge-1
  properties:
    - name: target
      desired:
        value: "20"
"""


def error_of(text: str, source: str = "m.yaml") -> str:
    with pytest.raises(ManifestError) as info:
        load_documents(text, source)
    message = info.value.message
    assert "\n" not in message
    return message


def test_multi_document_yaml_skips_empty_documents() -> None:
    """Empty documents and comment-only documents are skipped; the rest keep index and line."""
    docs = load_documents(KUBEEDGE, "m.yaml")
    assert [(d.index, d.line, d.body["kind"]) for d in docs] == [
        (1, 1, "DeviceModel"),
        (4, 14, "Device"),
    ]
    assert docs[1].body["spec"]["properties"][0]["desired"] == {"value": "20"}
    assert docs[1].where == "m.yaml:14 (document 4)"


def test_empty_file_has_no_documents() -> None:
    """A file of comments or nothing applies nothing rather than failing."""
    assert load_documents("", "m.yaml") == []
    assert load_documents("# nothing\n---\n", "m.yaml") == []


def test_json_object_array_and_list() -> None:
    """JSON manifests work as an object, an array of objects, or a List with items."""
    dev = {"kind": "Device", "metadata": {"name": "a"}}
    assert [d.body for d in load_documents(json.dumps(dev), "a.json")] == [dev]
    assert len(load_documents(json.dumps([dev, None, dev]), "a.json")) == 2
    listing = {"kind": "DeviceList", "metadata": {"resourceVersion": "3"}, "items": [dev, dev]}
    assert [d.body for d in load_documents(json.dumps(listing), "a.json")] == [dev, dev]


def test_yaml_list_kinds_expand_to_items() -> None:
    """`get -o yaml` output of a list applies back: a List document gives its items."""
    text = "kind: List\nitems:\n- kind: Device\n  metadata: {name: a}\n- kind: Node\n"
    assert [d.body["kind"] for d in load_documents(text, "m.yaml")] == ["Device", "Node"]


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    """A YAML syntax error is one line naming the file, line and column."""
    message = error_of("kind: Device\nmetadata:\n  name: a\n   bad: [\n", "thermo.yaml")
    assert message.startswith("thermo.yaml:4:")
    assert "invalid YAML" in message


def test_json_syntax_error_names_file_and_line() -> None:
    """A JSON syntax error is one line naming the file and line."""
    message = error_of('{\n  "kind": "Device",\n  "metadata": {,}\n}', "d.json")
    assert message.startswith("d.json:3:")
    assert "invalid JSON" in message


def test_python_tags_are_refused() -> None:
    """Only plain YAML is read: a python tag is an error, never executed."""
    assert "could not determine a constructor" in error_of("!!python/object/apply:os.system [x]")


def test_timestamps_become_strings_and_odd_values_are_refused() -> None:
    """YAML timestamps become RFC 3339 strings; keys and values JSON cannot carry are errors."""
    body = load_documents("when: 2027-01-15T08:00:00Z\nday: 2027-01-15\n", "m.yaml")[0].body
    assert body == {"when": "2027-01-15T08:00:00Z", "day": "2027-01-15"}
    assert "key 1 is not a string" in error_of("kind: Device\n1: one\n")
    assert "bytes" in error_of("data: !!binary aGVsbG8=\n")


def test_deeply_nested_yaml_is_refused() -> None:
    """Deep nesting, block or flow style, is a clear error rather than a recursion crash."""
    block = "".join("  " * i + "k:\n" for i in range(MAX_DEPTH + 10)) + "  " * 80 + "v\n"
    assert "nested" in error_of(block)
    flow = "a: " + "[" * 100_000 + "]" * 100_000
    assert "nest" in error_of(flow)


def test_deeply_nested_json_is_refused() -> None:
    """Deeply nested JSON is refused whether or not it would hit Python's recursion limit."""
    assert "nested more than" in error_of('{"a": ' + "[" * 200 + "]" * 200 + "}", "d.json")
    assert "nested" in error_of('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}", "d.json")


def test_alias_bombs_are_refused() -> None:
    """A 'billion laughs' document is refused before it expands in memory."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    assert "alias" in error_of("\n".join(lines) + "\n")


def test_large_honest_list_is_not_mistaken_for_a_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big List without aliases loads, however many values it holds below the size limit."""
    monkeypatch.setattr(manifests, "MAX_NODES", 1000)
    items = "".join(f"- {{kind: Node, metadata: {{name: n{i}}}}}\n" for i in range(2000))
    docs = load_documents("kind: List\nitems:\n" + items, "nodes.yaml")
    assert len(docs) == 2000
    assert docs[-1].body == {"kind": "Node", "metadata": {"name": "n1999"}}


def test_recursive_alias_is_refused() -> None:
    """A self-referencing alias is an error, not an endless loop."""
    assert "nested" in error_of("a: &a [*a]\n")


def test_huge_file_is_refused(tmp_path: Path) -> None:
    """A 10 MB manifest is refused with its size limit, without reading it all."""
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write("items:\n")
        for _ in range(10 * 1024 * 1024 // 16):
            f.write("  - aaaaaaaaaaaa\n")
    assert big.stat().st_size > MAX_FILE_BYTES
    with pytest.raises(ManifestError) as info:
        read_source(str(big))
    assert info.value.message.startswith(f"{big}: larger than 4 MiB")


def test_stdin_is_read_with_the_same_limits() -> None:
    """`-f -` reads stdin; it too is refused when larger than the limit."""
    assert read_source("-", io.BytesIO(b"kind: Node\n")) == "kind: Node\n"
    with pytest.raises(ManifestError) as info:
        read_source("-", io.BytesIO(b"#" * (MAX_FILE_BYTES + 1)))
    assert info.value.message.startswith("<stdin>: larger than")


def test_non_utf8_is_refused(tmp_path: Path) -> None:
    """A binary or wrongly encoded file is one clear error."""
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"kind: \xff\xfe\n")
    with pytest.raises(ManifestError) as info:
        read_source(str(path))
    assert "not UTF-8" in info.value.message


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    """A missing path or a directory without manifests is named in the error."""
    with pytest.raises(ManifestError) as info:
        expand_paths([str(tmp_path / "nope.yaml")])
    assert info.value.message == f"{tmp_path / 'nope.yaml'}: no such file or directory"
    with pytest.raises(ManifestError) as info:
        expand_paths([str(tmp_path)])
    assert "no .yaml, .yml or .json files" in info.value.message


def test_directories_give_their_manifests_in_order(tmp_path: Path) -> None:
    """-f DIR applies the directory's .yaml/.yml/.json files in name order, ignoring others."""
    (tmp_path / "b.yml").write_text("kind: Node\nmetadata: {name: b}\n")
    (tmp_path / "a.json").write_text('{"kind": "Node", "metadata": {"name": "a"}}')
    (tmp_path / "c.yaml").write_text("kind: Node\nmetadata: {name: c}\n")
    (tmp_path / "README.md").write_text("# not a manifest")
    docs = read_manifests([str(tmp_path)])
    assert [d.body["metadata"]["name"] for d in docs] == ["a", "b", "c"]
    assert docs[0].source == str(tmp_path / "a.json")


# -- identify ------------------------------------------------------------------------


def doc(body: object) -> Document:
    return Document("m.yaml", 2, 7, body)


def test_identify_namespaces() -> None:
    """A document's own namespace wins, then -n, then default; nodes have none."""
    dev = {"kind": "Device", "metadata": {"name": "a"}}
    assert identify(doc(dev), None).namespace == "default"
    assert identify(doc(dev), "plant-3").namespace == "plant-3"
    own = {"kind": "Device", "metadata": {"name": "a", "namespace": "lab"}}
    target = identify(doc(own), "plant-3")
    assert (target.kind, target.namespace, target.name, target.label) == (
        DEVICE,
        "lab",
        "a",
        "device/a",
    )
    assert identify(doc({"kind": "Node", "metadata": {"name": "e"}}), "x").kind is NODE
    assert identify(doc({"kind": "Node", "metadata": {"name": "e"}}), "x").namespace is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (["a", "list"], "a manifest must be a mapping, not a list"),
        ("text", "a manifest must be a mapping, not a string"),
        (42, "a manifest must be a mapping, not a number"),
        ({"metadata": {"name": "a"}}, "the manifest has no kind"),
        ({"kind": "Pod", "metadata": {"name": "a"}}, 'unknown kind "Pod"'),
        ({"kind": "device", "metadata": {"name": "a"}}, 'unknown kind "device"'),
        ({"kind": "Device"}, "Device has no metadata.name"),
        ({"kind": "Device", "metadata": ["a"]}, "Device has no metadata.name"),
        ({"kind": "Device", "metadata": {"name": "a", "namespace": 3}}, "must be a string"),
    ],
)
def test_identify_refuses_what_is_not_an_object(body: object, reason: str) -> None:
    """A document that names no object of a known kind is an error naming its file and line."""
    with pytest.raises(ManifestError) as info:
        identify(doc(body), None)
    assert info.value.message.startswith("m.yaml:7 (document 2): ")
    assert reason in info.value.message
