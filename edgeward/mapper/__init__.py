"""The mapper SDK: write a device "mapper" that edgecore drives over MQTT.

A mapper is the program beside a device that reads and writes it. Subclass
:class:`Mapper`, override :meth:`~Mapper.on_desired` (apply a desired value) and
:meth:`~Mapper.poll` (read current values), and call :meth:`~Mapper.run`::

    from edgeward.mapper import Mapper

    class Lamp(Mapper):
        writable = {"power"}

        def on_desired(self, device_id, name, value):
            hardware.set_power(value == "on")

        def poll(self, device_id):
            return {"power": "on" if hardware.power() else "off"}

    Lamp("127.0.0.1", 1883, devices=["default/lamp"], poll_interval=5).run()

It speaks KubeEdge's ``$hw/events/...`` twin protocol (KUBEEDGE-MQTT.md), so
the same mapper works against KubeEdge's edgecore. docs/mappers.md is the guide.

The SDK needs only paho-mqtt and the standard library, so it installs on small
gateways without the rest of Edgeward.

Errors::

    Exception
     ├── DesiredRefused   raise it from on_desired to refuse a value (logged, no traceback)
     ├── TwinGetError     get_twins() got an error answer (``code``, ``reason``)
     ├── TimeoutError     get_twins() got no answer in time
     └── ValueError       a bad device id, state or constructor argument (your code's bug)
         └── BadPayload   a received message was malformed (logged and ignored internally)
"""

from edgeward.addresses import parse_broker
from edgeward.mapper.base import (
    REFUSED_RETRY_SECONDS,
    DesiredRefused,
    Mapper,
    TwinGetError,
)
from edgeward.mapper.payloads import (
    DEVICE_STATES,
    TWIN_TYPES,
    BadPayload,
    Twin,
    valid_key,
    valid_value,
)
from edgeward.mapper.topics import check_device_id

__all__ = [
    "DEVICE_STATES",
    "REFUSED_RETRY_SECONDS",
    "TWIN_TYPES",
    "BadPayload",
    "DesiredRefused",
    "Mapper",
    "Twin",
    "TwinGetError",
    "check_device_id",
    "parse_broker",
    "valid_key",
    "valid_value",
]
