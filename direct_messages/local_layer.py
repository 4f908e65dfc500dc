"""A channel layer for one process: the embedded default, where there is no Redis.

Channels' ``InMemoryChannelLayer`` is, in its maintainers' words, for testing
(django/channels#1574): every ``receive`` walks every channel and group membership of
the process looking for expired entries, and every ``group_send`` deep-copies the event
once per member. With a hundred sockets that is most of what a delivered message costs
the embedded server (bench/RESULTS.md). This layer keeps the same API and semantics
(``BaseChannelLayer`` with the groups and flush extensions, ``expiry``,
``group_expiry``, ``capacity``) but does each piece of work when it is due:

* a ``receive`` skips its own expired events; a channel whose oldest event has expired
  unread is found dead when something is next sent to it, and leaves its groups then;
* a group membership older than ``group_expiry`` is dropped when the group is sent to;
* an event is copied once per ``group_send`` (a JSON round trip, as a Redis layer's
  serialization does; a deep copy per member for what JSON cannot carry), so a
  consumer that changes what it receives changes nobody else's;
* a ``group_send`` to a full channel drops that channel's oldest event, as the Redis
  layers' capacity does: a live socket that fell behind refills the gap from the
  database by ``seq``. A ``send`` to a full channel raises ``ChannelFull``, as the
  layer specification says.

It holds only the process's own channels: several processes need a Redis layer.
"""

from __future__ import annotations

import asyncio
import copy
import random
import string
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer


class _Mailbox:
    """One channel's events, oldest first, and the receivers waiting for one."""

    __slots__ = ("events", "waiters")

    def __init__(self, capacity: int) -> None:
        self.events: deque[tuple[float, Any]] = deque(maxlen=capacity)
        self.waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def put(self, expires: float, event: Any) -> None:
        self.events.append((expires, event))  # past capacity, the oldest goes
        while self.waiters:
            loop, waiter = self.waiters.popleft()
            if not waiter.done():
                if loop is _running_loop():
                    waiter.set_result(None)
                else:  # another thread's loop (async_to_sync in a view): wake it safely
                    loop.call_soon_threadsafe(_wake, waiter)
                return


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LocalChannelLayer(BaseChannelLayer):  # type: ignore[misc]  # channels is untyped
    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            expiry=expiry, capacity=capacity, channel_capacity=channel_capacity, **kwargs
        )
        self.group_expiry = group_expiry
        self.mailboxes: dict[str, _Mailbox] = {}
        self.groups: dict[str, dict[str, float]] = {}  # group -> channel -> joined at
        self.memberships: dict[str, set[str]] = {}  # channel -> its groups

    # --- channels --------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        return prefix + "local!" + "".join(random.choices(string.ascii_letters, k=12))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        mailbox = self._mailbox(channel)
        if mailbox is None:
            return
        if len(mailbox.events) >= self.get_capacity(channel):
            raise ChannelFull(channel)
        mailbox.put(time.time() + self.expiry, copy.deepcopy(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        mailbox = self.mailboxes.setdefault(channel, _Mailbox(self.get_capacity(channel)))
        try:
            while True:
                while mailbox.events:
                    expires, event = mailbox.events.popleft()
                    if expires >= time.time():
                        return self._unpack(event)
                waiter = asyncio.get_running_loop().create_future()
                mailbox.waiters.append((asyncio.get_running_loop(), waiter))
                await waiter
        finally:
            # A cancelled receive (the socket went) leaves no waiter behind.
            mailbox.waiters = deque(w for w in mailbox.waiters if not w[1].done())
            if not mailbox.events and not mailbox.waiters:
                self.mailboxes.pop(channel, None)

    def _mailbox(self, channel: str) -> _Mailbox | None:
        """``channel``'s mailbox, or None if it is dead: its oldest event expired unread
        (then it leaves its groups, as InMemoryChannelLayer's expiry does)."""
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:
            return self.mailboxes.setdefault(channel, _Mailbox(self.get_capacity(channel)))
        if mailbox.events and mailbox.events[0][0] < time.time() and not mailbox.waiters:
            self.mailboxes.pop(channel, None)
            for group in list(self.memberships.get(channel, ())):
                self._leave(group, channel)
            return None
        return mailbox

    def _unpack(self, event: Any) -> dict[str, Any]:
        """A receiver's own copy of a queued event (JSON, or already a deep copy)."""
        return event if isinstance(event, dict) else orjson.loads(event)

    # --- groups ----------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups.setdefault(group, {})[channel] = time.time()
        self.memberships.setdefault(channel, set()).add(group)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._leave(group, channel)

    def _leave(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                self.groups.pop(group, None)
        groups = self.memberships.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                self.memberships.pop(channel, None)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        if not self.groups.get(group):
            return
        try:
            packed = orjson.dumps(message)  # each receiver gets its own copy from this
        except TypeError:  # bytes, or keys that are not strings: a deep copy each
            self._deliver(group, lambda: copy.deepcopy(message))
        else:
            self._deliver(group, lambda: packed)

    def _deliver(self, group: str, event: Callable[[], Any]) -> None:
        """Queue ``event()`` for each of ``group``'s members in this process."""
        members = self.groups.get(group)
        if not members:
            return
        now = time.time()
        stale = now - self.group_expiry
        for channel, joined in list(members.items()):
            if joined < stale:
                self._leave(group, channel)
                continue
            mailbox = self._mailbox(channel)
            if mailbox is not None:
                mailbox.put(now + self.expiry, event())

    async def flush(self) -> None:
        self.mailboxes.clear()
        self.groups.clear()
        self.memberships.clear()

    async def close(self) -> None:
        """Nothing to close: the layer holds no connection."""
