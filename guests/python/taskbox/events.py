"""Broadcasts events to whoever listens (Redis pub/sub, SSE to browsers). The manifest grants
channel patterns: `event_channels = ["upload:*"]`.
"""

import json

from componentize_py_types import Err
from wit_world.imports import events

from .errors import CapabilityError


class EventError(CapabilityError):
    """An event was not published. `kind` is `denied` (the channel is not granted),
    `invalid-channel`, `invalid-event`, `too-large` (the detail is the limit in bytes), or
    `unavailable` (worth a retry).
    """


def publish(channel: str, event: str, data: object) -> None:
    """Publishes an event named `event` on `channel`. A `str` is sent as it is; anything
    else is sent as JSON.
    """
    text = data if isinstance(data, str) else json.dumps(data)
    try:
        events.publish(channel, event, text)
    except Err as err:
        raise EventError.from_wit(err.value) from None
