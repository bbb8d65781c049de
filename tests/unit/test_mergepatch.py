"""JSON merge patch (RFC 7386), the body of PATCH requests."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudhub.mergepatch import merge_patch

# RFC 7386 appendix A, verbatim: (original, patch, result).
RFC_7386_EXAMPLES = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_7386_EXAMPLES)
def test_rfc_7386_appendix_a(original: str, patch: str, result: str) -> None:
    """Every example of RFC 7386 appendix A gives the RFC's result."""
    assert merge_patch(json.loads(original), json.loads(patch)) == json.loads(result)


def test_null_deletes_nested_fields() -> None:
    """null removes a field at any depth and leaves its siblings."""
    target = {"spec": {"nodeName": "edge-1", "properties": [{"name": "temp"}]}, "kind": "Device"}
    assert merge_patch(target, {"spec": {"nodeName": None}}) == {
        "spec": {"properties": [{"name": "temp"}]},
        "kind": "Device",
    }


def test_null_for_a_missing_field_is_harmless() -> None:
    """Deleting a field that is not there changes nothing."""
    assert merge_patch({"a": 1}, {"b": None}) == {"a": 1}
    assert merge_patch({"a": 1}, {"b": {"c": None}}) == {"a": 1, "b": {}}


def test_lists_are_replaced_not_merged() -> None:
    """A list in the patch replaces the target's list whole."""
    target = {"spec": {"properties": [{"name": "temp"}, {"name": "hum"}]}}
    patch = {"spec": {"properties": [{"name": "temp", "desired": {"value": "21"}}]}}
    assert merge_patch(target, patch) == patch


def test_empty_patch_changes_nothing() -> None:
    """An empty object patch leaves the target as it was."""
    target = {"a": {"b": [1, 2]}, "c": None}
    assert merge_patch(target, {}) == target


def test_inputs_are_not_mutated() -> None:
    """Neither the target nor the patch is modified by applying the patch."""
    target = {"metadata": {"name": "d", "labels": {"a": "1"}}, "spec": {"nodeName": "edge-1"}}
    patch = {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {"x": {"y": None}}}
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    assert target == target_before
    assert patch == patch_before
    assert result == {
        "metadata": {"name": "d", "labels": {"b": "2"}},
        "spec": {"nodeName": "edge-1", "x": {}},
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=4)
    ),
    max_leaves=15,
)


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_patching_never_mutates_and_is_idempotent(target: Any, patch: Any) -> None:
    """For any target and patch the inputs stay unchanged and applying twice equals once."""
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    once = merge_patch(target, patch)
    assert target == target_before
    assert patch == patch_before
    assert merge_patch(once, patch) == once


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_patch_keys_win(target: Any, patch: Any) -> None:
    """Every non-null key of an object patch ends up in the result; null keys are gone."""
    result = merge_patch(target, patch)
    if not isinstance(patch, dict):
        assert result == patch
        return
    for key, value in patch.items():
        if value is None:
            assert key not in result
        elif not isinstance(value, dict):
            assert result[key] == value
        else:
            assert isinstance(result[key], dict)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_patching_an_empty_object_strips_nulls(patch: Any) -> None:
    """Applied to {}, an object patch gives itself without its null members (RFC 7386 §2)."""
    if isinstance(patch, dict):
        assert merge_patch({}, patch) == without_nulls(patch)
