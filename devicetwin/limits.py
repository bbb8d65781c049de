"""What the hub takes, enforced before a mapper is answered.

Copies of ``edgeward.storable``'s limits, which explains each number (devicetwin
imports nothing of ours); a test holds the copies equal to the originals.
"""

from __future__ import annotations

#: Twins a device may have, soft-deleted ones included: the hub drops a twin report with
#: more keys than this whole.
MAX_TWINS = 1000
#: The largest outbox row the hub takes, in bytes of compact UTF-8 JSON; a device's twin
#: report is one row.
MAX_REPORT_BYTES = 1024 * 1024
