"""Reading manifests: YAML (multi-document) or JSON files, directories and stdin.

Input is untrusted: a file is refused above :data:`MAX_FILE_BYTES`, nesting
deeper than :data:`MAX_DEPTH` and files that expand (through YAML aliases)
to more values than they have characters are refused with a one-line reason.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgeward.cli.errors import CliError
from edgeward.kinds import DEFAULT_NAMESPACE, KINDS, Kind

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000  # values a file may expand to, or its length in characters if larger
SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


class ManifestError(CliError):
    """A file or document could not be read; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    """One manifest: where it came from (for error lines) and its parsed body."""

    source: str
    index: int  # 1-based position of the document in its file
    line: int  # 1-based line where the document starts
    body: Any

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line} (document {self.index})"


@dataclass(frozen=True)
class Target:
    """What a manifest names: its kind, namespace (None for cluster-scoped kinds) and name."""

    kind: Kind
    namespace: str | None
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind.name.lower()}/{self.name}"


def identify(doc: Document, default_namespace: str | None) -> Target:
    """The object ``doc`` describes; ManifestError naming the document when it is not one."""
    body = doc.body
    if not isinstance(body, dict):
        raise ManifestError(f"{doc.where}: a manifest must be a mapping, not {_type_word(body)}")
    word = body.get("kind")
    if not isinstance(word, str) or not word:
        raise ManifestError(f"{doc.where}: the manifest has no kind")
    kind = next((k for k in KINDS if k.name == word), None)
    if kind is None:
        known = ", ".join(k.name for k in KINDS)
        raise ManifestError(f'{doc.where}: unknown kind "{word}" (known: {known})')
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{doc.where}: {kind.name} has no metadata.name")
    namespace = None
    if kind.namespaced:
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        if ns is not None and not isinstance(ns, str):
            raise ManifestError(f"{doc.where}: metadata.namespace must be a string")
        namespace = ns or default_namespace or DEFAULT_NAMESPACE
    return Target(kind, namespace, name)


def _type_word(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def expand_paths(paths: list[str]) -> list[str]:
    """Files named by ``paths``: directories give their manifest files, sorted, not recursive."""
    out: list[str] = []
    for path in paths:
        if path == STDIN:
            out.append(path)
            continue
        p = Path(path)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file())
            if not found:
                raise ManifestError(f"{path}: no .yaml, .yml or .json files in this directory")
            out.extend(found)
        elif p.exists():
            out.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return out


def read_source(path: str, stdin: IO[bytes] | None = None) -> str:
    """The text of ``path`` (``-`` is stdin), refusing huge or non-UTF-8 input."""
    try:
        if path == STDIN:
            raw = (stdin or sys.stdin.buffer).read(MAX_FILE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"{_label(path)}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ManifestError(
            f"{_label(path)}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
            "split it into smaller files"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{_label(path)}: not UTF-8 text (byte {exc.start})") from None


def load_documents(text: str, source: str) -> list[Document]:
    """The documents in ``text``: JSON when it starts with ``{`` or ``[``, YAML otherwise.

    Empty documents are skipped; a ``List`` (``kind: List`` or ``DeviceList``
    ...) gives its items. Raises ManifestError on a syntax error or hostile input.
    """
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        docs = _load_json(text, source)
    else:
        docs = list(_load_yaml(text, source))
    out: list[Document] = []
    for doc in docs:
        out.extend(_expand_list(doc))
    return out


def read_manifests(paths: list[str], stdin: IO[bytes] | None = None) -> list[Document]:
    """Every document in ``paths`` (files, directories, ``-``) in order."""
    docs: list[Document] = []
    for path in expand_paths(paths):
        docs.extend(load_documents(read_source(path, stdin), _label(path)))
    return docs


def _label(path: str) -> str:
    return "<stdin>" if path == STDIN else path


# -- JSON -----------------------------------------------------------------------


def _load_json(text: str, source: str) -> list[Document]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise ManifestError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    _plain(body, f"{source}:1", [MAX_NODES])
    if isinstance(body, list):
        # A JSON array is read as a list of manifests, like a multi-document YAML file.
        return [Document(source, i, 1, item) for i, item in enumerate(body, 1) if item is not None]
    return [Document(source, 1, 1, body)]


# -- YAML -----------------------------------------------------------------------


def _load_yaml(text: str, source: str) -> Iterator[Document]:
    import yaml

    loader = _depth_limited_loader()(text)
    index = 0
    # Without aliases a file cannot hold more values than it has characters.
    budget = [max(MAX_NODES, len(text))]
    try:
        while loader.check_node():
            node = loader.get_node()
            index += 1
            line = node.start_mark.line + 1 if node is not None else 1
            body = loader.construct_document(node) if node is not None else None
            if body is None:
                continue  # an empty document, e.g. between two "---"
            yield Document(source, index, line, _plain(body, f"{source}:{line}", budget))
    except _TooDeep as exc:
        raise ManifestError(
            f"{source}:{exc.line}: nested more than {MAX_DEPTH} levels deep"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _depth_limited_loader() -> type:
    """A safe loader that refuses deep nesting while composing, before it can recurse far.

    With libyaml present the scanning and parsing run in C (several times faster);
    composing always runs in Python, where the depth is counted.
    """
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    try:
        from yaml._yaml import CParser as Parser
    except ImportError:
        Parser = None

    class DepthLimited(Composer):
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise _TooDeep(self.peek_event().start_mark.line + 1)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    if Parser is None:

        class PyLoader(DepthLimited, yaml.SafeLoader):
            pass

        return PyLoader

    class CLoader(DepthLimited, Parser, SafeConstructor, Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            Parser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    return CLoader


def _plain(body: Any, where: str, budget: list[int]) -> Any:
    """``body`` as plain JSON values: YAML timestamps become strings; other tags are refused.

    Also the guard against alias bombs: the walk spends ``budget[0]`` on every
    value it visits and gives up when it runs out.
    """

    def walk(value: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ManifestError(f"{where}: expands to too many values (YAML alias bomb?)")
        if depth > MAX_DEPTH:
            raise ManifestError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    # YAML 1.1 reads `on:` or `1:` as non-string keys; say so rather than guess.
                    raise ManifestError(f"{where}: key {key!r} is not a string; quote it")
                out[key] = walk(item, depth + 1)
            return out
        if isinstance(value, list):
            return [walk(item, depth + 1) for item in value]
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, dt.date):
            return value.isoformat()
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise ManifestError(f"{where}: a {type(value).__name__} value cannot be sent as JSON")

    return walk(body, 0)


def _expand_list(doc: Document) -> list[Document]:
    body = doc.body
    if (
        isinstance(body, dict)
        and isinstance(body.get("kind"), str)
        and body["kind"].endswith("List")
        and isinstance(body.get("items"), list)
    ):
        return [Document(doc.source, doc.index, doc.line, item) for item in body["items"]]
    return [doc]
