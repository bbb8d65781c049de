"""Why the twin protocol refused something, and the exact words it uses.

::

    TwinError               code, reason, event_id, reply_topic (None: nothing is sent back)
     ├── BadRequest         400: the body cannot be parsed, or a key, value or state is invalid
     │    └── ValueTypeError 400: a value does not fit its twin's type, or the type is unknown
     └── NotFound           404: the topic names a device this node does not have

A TwinError is peer input refused, never a bug of ours: the engine catches it
at one boundary and turns it into the error result KubeEdge sends (when
``reply_topic`` is set) and into ``Outcome.error`` for one log line. The
reasons below are KubeEdge's texts where KUBEEDGE-MQTT.md names one, and
ours (marked) where it does not.
"""

from __future__ import annotations

from devicetwin.limits import MAX_REPORT_BYTES, MAX_TWINS

# Update requests (KubeEdge's texts).
UNMARSHAL_UPDATE = "Unmarshal update request body failed, please check the request"
NO_TWIN = "Update twin error, key:twin does not exist"
BAD_KEY = (
    "The key of twin must only include upper or lowercase letters, number, english, "
    "and special letter - _ . , : / @ # and the length of key should be less than 128 bytes"
)
BAD_VALUE = (
    "The value of twin must only include upper or lowercase letters, number, english, "
    "and special letter - _ . , : / @ # and the length of value should be less than 512 bytes"
)
UPDATE_NOT_FOUND = "update rejected due to the device is not existed"
NOT_INT = "the value is not int or integer"
NOT_FLOAT = "the value is not float"
NOT_BOOL = "the bool value must be true or false"
TYPE_NOT_ALLOWED = "the value type is not allowed"

# Ours: KubeEdge crashes on these or answers with a Go-formatted dump of the payload.
NO_VALUE = "Update twin error, expected and actual must carry a value"
TOO_MANY_TWINS = f"Update twin error, a device may have at most {MAX_TWINS} twins"
REPORT_TOO_LARGE = (
    f"Update twin error, the device's twins would take more than {MAX_REPORT_BYTES} bytes"
)
UNMARSHAL_GET = "Unmarshal get request body failed, please check the request"
UNMARSHAL_MEMBERSHIP = "Unmarshal membership get request body failed, please check the request"
# Refused without a reply (KubeEdge logs these and stays silent); BAD_STATE is answered
# with an error result, where KubeEdge is silent (docs/KUBEEDGE-MQTT.md).
UNMARSHAL_STATE = "Unmarshal state update request body failed, please check the request"
BAD_STATE = "the state must be online, ok, offline, disconnected, unhealthy or unknown (any case)"


def get_not_found(device_id: str) -> str:
    """KubeEdge's reason for a twin/get of a device this node does not have."""
    return f"Device {device_id} not found while getting twin"


def state_not_found(device_id: str) -> str:
    """Our reason (no reply is sent) for a state update of an unknown device."""
    return f"Device {device_id} not found while updating state"


class TwinError(Exception):
    """A message or a cloud change was refused; ``reply_topic`` is where the error result goes."""

    def __init__(
        self, code: int, reason: str, event_id: str = "", reply_topic: str | None = None
    ) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.event_id = event_id
        self.reply_topic = reply_topic

    def replying_on(self, topic: str) -> TwinError:
        """The same refusal, answered on ``topic``."""
        err = type(self).__new__(type(self))
        TwinError.__init__(err, self.code, self.reason, self.event_id, topic)
        return err

    def _key(self) -> tuple[object, ...]:
        return (type(self), self.code, self.reason, self.event_id, self.reply_topic)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TwinError) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code}, reason={self.reason!r}, "
            f"event_id={self.event_id!r}, reply_topic={self.reply_topic!r})"
        )

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


class BadRequest(TwinError):
    """400: the body cannot be parsed, or a key, value or state in it is invalid."""

    def __init__(self, reason: str, event_id: str = "", reply_topic: str | None = None) -> None:
        super().__init__(400, reason, event_id, reply_topic)


class ValueTypeError(BadRequest):
    """400: a value does not fit its twin's type, or the type name is not one we know."""


class NotFound(TwinError):
    """404: the topic names a device this node does not have."""

    def __init__(self, reason: str, event_id: str = "", reply_topic: str | None = None) -> None:
        super().__init__(404, reason, event_id, reply_topic)
