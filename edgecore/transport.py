"""How the edge opens its link to the hub, in one place (beside ``cloudhub/transport.py``):
wss:// with the node's certificate, or ws:// when the config allows plain transport."""

from __future__ import annotations

import asyncio.sslproto
from typing import Any

from websockets.asyncio.client import connect

from edgecore.config import HubLinkConfig
from edgecore.credentials import client_context
from edgeward import protocol


def connect_hub(url: str, config: HubLinkConfig) -> Any:
    """An async context manager yielding the websocket to ``url``.

    No compression (small JSON frames, small gateways) and no proxy from the
    environment: an ``http_proxy`` set for package downloads must not capture
    the hub link.
    """
    tls = None
    if url.startswith("wss://"):
        # asyncio reads TLS in 256 KiB buffers, all resident; 32 KiB is two TLS records
        asyncio.sslproto.SSLProtocol.max_size = 32 * 1024
        tls = client_context(config)
    return connect(
        url,
        ssl=tls,
        open_timeout=config.open_timeout,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
        # a link found dead by its pings cannot carry the close handshake either
        close_timeout=min(config.ping_timeout, 10.0),
        max_size=protocol.MAX_FRAME_BYTES,
        compression=None,
        proxy=None,
    )
