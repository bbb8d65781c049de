"""How the edge opens its link to the hub, in one place (TLS and client certificates
arrive here with the security issue, beside ``cloudhub/transport.py``)."""

from __future__ import annotations

from typing import Any

from websockets.asyncio.client import connect

from edgecore.config import HubLinkConfig
from edgeward import protocol


def connect_hub(url: str, config: HubLinkConfig) -> Any:
    """An async context manager yielding the websocket to ``url``.

    No compression (small JSON frames, small gateways) and no proxy from the
    environment: an ``http_proxy`` set for package downloads must not capture
    the hub link.
    """
    return connect(
        url,
        open_timeout=config.open_timeout,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
        max_size=protocol.MAX_FRAME_BYTES,
        compression=None,
        proxy=None,
    )
