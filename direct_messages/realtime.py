"""The only caller of the channel layer's ``group_send``.

The database is the source of truth and the channel layer a fast, lossy notification
bus: a failed publish is logged (once per outage, not once per message) and swallowed,
because the message is already committed and every client recovers it with
``?after=`` (and open sockets fill the gap themselves when the layer comes back).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from direct_messages.db import in_thread

logger = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]  # (group, event)
T = TypeVar("T")

# Set while a consumer runs a service: committed events are handed back to the consumer,
# which publishes them on its own event loop instead of hopping back from the thread.
_collected: contextvars.ContextVar[list[Event] | None] = contextvars.ContextVar(
    "dm_collected_events", default=None
)


class _LayerHealth:
    """Remembers whether the layer is failing, so an outage is logged once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failing = False

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            first, self.failing = not self.failing, True
        if first:
            logger.error("channel layer unavailable, live delivery paused: %r", exc)

    def succeeded(self) -> None:
        with self._lock:
            recovered, self.failing = self.failing, False
        if recovered:
            logger.warning("channel layer is back, live delivery resumed")


layer_health = _LayerHealth()


async def publish(events: Iterable[Event]) -> None:
    """Send each event to its group; never raises."""
    layer = get_channel_layer()
    if layer is None:
        return
    many = getattr(layer, "group_send_many", None)  # one round trip for all of them
    try:
        if many is not None:
            await many(list(events))
        else:
            for group, event in events:
                await layer.group_send(group, event)
    except Exception as exc:  # any layer failure: the database has the message
        layer_health.failed(exc)
        return
    layer_health.succeeded()


def broadcast_on_commit(events: list[Event]) -> None:
    """Publish ``events`` once the current transaction commits (at once outside one)."""
    if not events:
        return
    collected = _collected.get()
    if collected is not None:
        transaction.on_commit(lambda: collected.extend(events))
    else:
        transaction.on_commit(lambda: async_to_sync(publish)(events))


def collecting_events(func: Callable[..., T], /, **kwargs: Any) -> tuple[T, list[Event]]:
    """Run ``func(**kwargs)`` and return its result with the events it committed,
    unpublished."""
    events: list[Event] = []
    token = _collected.set(events)
    try:
        return func(**kwargs), events
    finally:
        _collected.reset(token)


async def run_service(func: Callable[..., T], /, **kwargs: Any) -> T:
    """Run the service ``func(**kwargs)`` in a database thread, then publish the events
    it committed, from the caller's event loop (a consumer's): one thread hop, where
    publishing from the thread would take a second one back to the loop."""
    result, events = await in_thread(collecting_events)(func, **kwargs)
    await publish(events)
    return result
