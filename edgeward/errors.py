"""The exceptions shared by every Edgeward part.

::

    EdgewardError
     ├── ConfigError          a configuration file or flag is wrong (lists every problem)
     ├── InvalidObject        a resource failed validation (carries field causes)
     ├── ReportRefused        the hub will never take one report row (carries the reason)
     ├── StoreError
     │    ├── NotFound        no object with that kind/namespace/name
     │    ├── AlreadyExists   create of a name that is taken
     │    └── Conflict        a write carried a stale resourceVersion
     ├── ProtocolError        a peer sent a frame we cannot accept (carries a code)
     ├── SchemaTooNew         a newer cloudhub migrated the hub's database (both versions)
     └── FatalError           a daemon cannot go on, and retrying would not help (exit 1)

Errors carry fields, not prose; each boundary (the REST API, the edge
endpoint, the CLI) turns them into its own reply exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass


class EdgewardError(Exception):
    """Base class of every error Edgeward raises on purpose."""


class ConfigError(EdgewardError):
    """A configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class FieldCause:
    """One reason an object is invalid: the field's path and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


#: An InvalidObject's message names this many causes; ``causes`` holds them all.
MAX_CAUSES_IN_MESSAGE = 20


class InvalidObject(EdgewardError):
    """A resource failed validation; ``causes`` names each bad field."""

    def __init__(self, kind: str, name: str, causes: list[FieldCause]) -> None:
        self.kind = kind
        self.name = name
        self.causes = list(causes)
        shown = MAX_CAUSES_IN_MESSAGE
        detail = "; ".join(str(c) for c in self.causes[:shown])
        if len(self.causes) > shown:
            detail += f" (and {len(self.causes) - shown} more)"
        label = f'{kind} "{name}"' if name else kind
        super().__init__(f"{label} is invalid: {detail}")


class ReportRefused(EdgewardError):
    """One report row the hub will never take (a device not bound to the node, a value it
    cannot store); ``reason`` goes back to the edge in report_ack's rejected list."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StoreError(EdgewardError):
    """An operation on stored objects could not be carried out."""

    def __init__(self, kind: str, namespace: str, name: str, message: str) -> None:
        self.kind = kind
        self.namespace = namespace
        self.name = name
        super().__init__(message)


class NotFound(StoreError):
    def __init__(self, kind: str, namespace: str, name: str) -> None:
        where = f' in namespace "{namespace}"' if namespace else ""
        super().__init__(kind, namespace, name, f'{kind} "{name}" not found{where}')


class AlreadyExists(StoreError):
    def __init__(self, kind: str, namespace: str, name: str) -> None:
        where = f' in namespace "{namespace}"' if namespace else ""
        super().__init__(kind, namespace, name, f'{kind} "{name}" already exists{where}')


class Conflict(StoreError):
    def __init__(self, kind: str, namespace: str, name: str, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            kind,
            namespace,
            name,
            f'{kind} "{name}" was modified: resourceVersion {expected} is stale '
            f"(current {actual}); get it again and retry",
        )


class ProtocolError(EdgewardError):
    """A peer's frame was refused. ``code`` is a stable token for the error frame;
    ``message_type`` the type the frame claimed, when it named a known one."""

    def __init__(self, code: str, reason: str, message_type: str | None = None) -> None:
        self.code = code
        self.reason = reason
        self.message_type = message_type
        super().__init__(f"{code}: {reason}")


class SchemaTooNew(EdgewardError):
    """A newer cloudhub migrated the hub's database to schema ``found``; this one knows
    the steps up to ``known`` only, and leaves the database alone."""

    def __init__(self, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"the database schema is version {found}, newer than this cloudhub "
            f"understands ({known}); upgrade cloudhub"
        )


class FatalError(EdgewardError):
    """A daemon cannot go on and trying again would not help (the hub link refused for good,
    say); it exits 1 with this one line."""
