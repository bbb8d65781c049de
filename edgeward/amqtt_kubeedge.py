"""Run amqtt (the demo's embedded broker) so that it carries KubeEdge's ``$hw/events`` topics.

amqtt 0.12 closes any client that publishes to a topic starting with ``$``,
reading MQTT-4.7.2-1 as a ban; the rule only says ``$`` topics are not matched
by filters that start with a wildcard, and Mosquitto carries them. KubeEdge
mappers publish on ``$hw/events/...``, so this broker lets such publishes
through and leaves every other rule to amqtt.

Run by edgeward.brokers with the interpreter of ``.venv-broker`` (amqtt lives
there, away from our own websockets version); it imports nothing of ours::

    .venv-broker/bin/python amqtt_kubeedge.py CONFIG.yaml
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.events import BrokerEvents
from amqtt.utils import read_yaml_config


class KubeEdgeBroker(Broker):
    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = wait_deliver.result()
        topic = getattr(message, "topic", None) or ""
        if not topic.startswith("$") or "#" in topic or "+" in topic:
            return await super()._handle_message_delivery(client_session, handler, wait_deliver)
        # amqtt's own path, without its refusal of "$" topics
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=message
        )
        if await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            await self.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id, message=message
            )
            await self._broadcast_message(client_session, topic, message.data)
            if message.publish_packet and message.publish_packet.retain_flag:
                await self.retain_message(client_session, topic, message.data, message.qos)
        return True


async def serve(config_path: str) -> None:
    broker = KubeEdgeBroker(read_yaml_config(config_path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] :: %(levelname)s - %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    asyncio.run(serve(sys.argv[1]))
