"""Whether downloads can work: one quick probe instead of a library retrying for minutes."""

from __future__ import annotations

import os
import socket

# TFDS and keras.applications both download from this host.
PROBE_HOST = ("storage.googleapis.com", 443)


def online() -> bool:
    """True when PROBE_HOST answers within 3 seconds; `ZOO_OFFLINE=1` says no without trying."""
    if os.environ.get("ZOO_OFFLINE"):
        return False
    try:
        with socket.create_connection(PROBE_HOST, timeout=3):
            return True
    except OSError:
        return False
