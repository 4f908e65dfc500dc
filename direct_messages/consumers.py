"""WebSocket consumers: thin translators between frames and the service layer.

``/ws/dm/{account}/`` is one user's side of one conversation; ``/ws/inbox/`` is one
user's inbox. Business rules live in :mod:`direct_messages.services`; here we only
authenticate, resolve, join groups and turn frames into service calls and events
into frames.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import Any
from urllib.parse import parse_qs

import orjson
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch

from direct_messages import presence, selectors, services
from direct_messages.adapters import handle_of
from direct_messages.auth import credentials_valid, header, token_id
from direct_messages.conf import dm_setting
from direct_messages.db import in_thread
from direct_messages.errors import (
    ApiError,
    Forbidden,
    Internal,
    Invalid,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthenticated,
)
from direct_messages.ratelimit import FrameBudget
from direct_messages.rooms import auth_group, inbox_group, pair_room_key, presence_group
from direct_messages.schemas import frame_ref, message_out, parse_frame, seq_parse, user_out

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_SOCKETS = 4429
LAYER_RETRY_MAX_SECONDS = 2.0


def heartbeat_seconds() -> float:
    """Often enough that a live socket never lets its presence entry expire."""
    return float(dm_setting("PRESENCE_TTL_SECONDS")) / 3


class FrameConsumer(AsyncWebsocketConsumer):
    """JSON frames with PROTOCOL.md's limits and errors, on a channel layer that may fail.

    A bad frame gets an ``error`` frame and the socket stays open. If the channel
    layer (Redis) goes away, the socket stays open too: frames are still served from
    the database, and group memberships are restored when the layer is back
    (:meth:`layer_recovered` lets subclasses catch up on what they missed).
    """

    groups_wanted: set[str]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` with a layer receive that survives outages."""
        self.scope = scope
        self.base_send = send
        self.groups_wanted = set()
        self.layer_ok = True
        self.frame_budget = FrameBudget(dm_setting("FRAME_RATE"), dm_setting("FRAME_BURST"))
        self.closing = False
        self.send_closed = False  # we closed, or the client went while we were sending
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = ""
        await self._new_channel()
        self._heartbeat_task: asyncio.Task[None] | None = None
        try:
            await await_many_dispatch([receive, self._layer_receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its per-event ``close_old_connections`` hop:
        group events touch no database, and :func:`in_thread` looks after the
        connections of the threads that do."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def _new_channel(self) -> bool:
        try:
            self.channel_name = await self.channel_layer.new_channel()
            return True
        except Exception as exc:
            self._layer_failed(exc)
            return False

    def _layer_failed(self, exc: BaseException) -> None:
        if self.layer_ok:
            logger.warning("channel layer failed for %s: %r", self.channel_name, exc)
        self.layer_ok = False

    async def _layer_receive(self) -> dict[str, Any]:
        delay = 0.1
        while True:
            if self.layer_ok and self.channel_name:
                try:
                    return dict(await self.channel_layer.receive(self.channel_name))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self.closing:  # a client library turned our cancellation into an error
                        raise asyncio.CancelledError() from exc
                    self._layer_failed(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAYER_RETRY_MAX_SECONDS)
            if (self.channel_name or await self._new_channel()) and await self._rejoin():
                delay = 0.1
                logger.info("channel layer back for %s", self.channel_name)
                return {"type": "layer.recovered"}

    async def _rejoin(self) -> bool:
        """(Re-)add this socket to its groups; False if the layer is still down."""
        try:
            for group in list(self.groups_wanted):
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception as exc:
            self._layer_failed(exc)
            return False
        self.layer_ok = True
        return True

    async def join(self, *groups: str) -> None:
        self.groups_wanted.update(groups)
        if self.channel_name:
            await self._rejoin()

    async def _heartbeat(self) -> None:
        """Refresh group memberships (a restarted Redis has forgotten them) and presence.

        The first beat comes at a random point of the period, so that sockets opened
        together (a process restart, a reconnecting crowd) do not beat together."""
        await asyncio.sleep(random.uniform(0.1, 1.0) * heartbeat_seconds())
        while True:
            if self.layer_ok and self.channel_name:
                await self._rejoin()
            await presence.store().refresh(self.user.pk, self.presence_id, self.presence_room)
            await asyncio.sleep(heartbeat_seconds())

    async def admit(self) -> bool:
        """Count this socket among the user's open sockets (in every process, with Redis);
        past ``MAX_SOCKETS_PER_USER`` close it with 4429 and return False."""
        conn = self.channel_name or f"local-{id(self)}"
        count = await presence.store().connect(self.user.pk, conn)
        cap = dm_setting("MAX_SOCKETS_PER_USER")
        if count is not None and cap and count > cap:
            await presence.store().disconnect(self.user.pk, conn)
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            return False
        self.presence_id = conn
        self.presence_room: str | None = None  # a conversation's socket sets its room
        self.first_socket = count == 1
        return True

    async def start_presence(self) -> None:
        """Tell partners the user came online (first socket), and keep this one counted."""
        self._heartbeat_task = asyncio.create_task(self._heartbeat())
        if self.first_socket:
            await services.run(services.presence_changed, user=self.user, online=True)

    async def stop_presence(self) -> None:
        conn = getattr(self, "presence_id", None)
        if conn is None:
            return
        last = await presence.store().disconnect(self.user.pk, conn, self.presence_room)
        if last and self._heartbeat_task is not None:  # announced online, so announce offline
            await services.run(services.presence_changed, user=self.user, online=False)

    async def layer_recovered(self, event: dict[str, Any]) -> None:
        """Called when the channel layer works again after a failure: a revocation may
        have been lost with it, so the credentials are checked once more."""
        if not await self.credentials_hold():
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leave the groups (if the layer lets us) and stop."""
        self.closing = True
        if self.layer_ok and self.channel_name:
            for group in self.groups_wanted:
                try:
                    await self.channel_layer.group_discard(group, self.channel_name)
                except Exception as exc:
                    self._layer_failed(exc)
                    break
        await self.disconnect(message.get("code", 1000))
        await self.stop_presence()
        raise StopConsumer()

    # --- frames ------------------------------------------------------------------------

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.send_closed = True
        await super().close(code=code, reason=reason)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if not self.send_closed:  # else a frame that crossed our close: nobody to answer
            await super().websocket_receive(message)

    async def send_json(self, content: dict[str, Any]) -> None:
        if self.send_closed:
            return  # the server would refuse to send it
        text = orjson.dumps(content).decode()
        try:
            await self.send(text_data=text)
        except Exception as exc:
            # The client closed while we still had frames for it (daphne raises autobahn's
            # Disconnected, other servers an OSError); its websocket.disconnect follows.
            # Raising here would crash the consumer and skip that cleanup (groups,
            # presence, the per-user socket count).
            self.send_closed = True
            logger.debug("frame for a closed socket dropped: %r", exc)

    async def send_error(self, exc: ApiError, ref: Any = None) -> None:
        await self.send_json({"type": "error", "code": exc.code, "detail": exc.detail, "ref": ref})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client: decode, check, dispatch."""
        if text_data is None:
            await self.send_error(Invalid("binary frames are not supported; send JSON text"))
            return
        limit = dm_setting("FRAME_MAX_BYTES")
        if len(text_data) > limit or len(text_data.encode("utf-8")) > limit:
            await self.send_error(TooLarge(f"frame: at most {limit} bytes"))
            return
        try:
            content = orjson.loads(text_data)
        except orjson.JSONDecodeError:
            await self.send_error(Invalid("frame: not valid JSON"))
            return
        ref = frame_ref(content)
        if wait := self.frame_budget.take():
            detail = f"too many frames; at most {dm_setting('FRAME_RATE'):g} a second"
            await self.send_error(RateLimited(detail, retry_after=math.ceil(wait)), ref)
            return
        frame: Any = None
        try:
            frame = parse_frame(content)
            await self.dispatch_frame(frame)
        except ApiError as exc:
            await self.send_error(exc, exc.ref if exc.ref is not None else ref)
            if isinstance(exc, Unauthenticated):  # the account went away under the socket
                await self.close(code=CLOSE_UNAUTHENTICATED)
        except Exception:
            # Only the parsed type: the raw content may nest too deep even to repr.
            logger.exception("frame failed: %s", getattr(frame, "type", "(not parsed)"))
            await self.send_error(Internal("internal error; the frame was not applied"), ref)

    async def dispatch_frame(self, frame: Any) -> None:
        handler = getattr(self, "frame_" + frame.type.replace(".", "_"), None)
        if handler is None:
            raise Invalid(f"type: {frame.type!r} is not accepted on this socket")
        await handler(frame)

    async def frame_ping(self, frame: Any) -> None:
        await self.send_json({"type": "pong"})

    def query_param(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    async def close_unauthenticated(self) -> bool:
        """Accept, then close with 4401 if the scope has no user, or 4429 if the user has
        too many sockets open; True if closed."""
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return True
        self.user = user
        self.handle = handle_of(user)
        self.authorization = header(self.scope, b"authorization")
        session = self.scope.get("session")
        self.session_key = None if self.authorization or session is None else session.session_key
        self.token_id = token_id(self.authorization)
        if not await self.admit():
            return True
        await self.join(auth_group(user.pk))
        return False

    async def auth_revoked(self, event: dict[str, Any]) -> None:
        """The user's credentials changed somewhere: close unless ours still hold."""
        mine = (event.get("jti") and event["jti"] == self.token_id) or (
            event.get("session") and event["session"] == self.session_key
        )
        if mine or not await self.credentials_hold():
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def credentials_hold(self) -> bool:
        check = in_thread(credentials_valid)
        return bool(await check(self.user.pk, self.authorization, self.session_key))


class DirectMessageConsumer(FrameConsumer):
    """``/ws/dm/{account}/``: the authenticated user's conversation with ``account``.

    Delivery is exactly-once per socket: ``high`` is the highest seq up to which this
    socket has every message, ``ahead`` the seqs delivered beyond it. A duplicate
    (replay overlapping live events) is dropped; a gap (events out of order, or lost
    by the layer) is filled from the database, which always has every seq below a
    committed one, because seqs are allocated under the room's lock.

    The layer may also drop the *newest* events (channels-redis keeps at most
    ``capacity`` pending events per process: a process that stalls or falls behind
    loses the rest), and then no later event reveals the gap. So once a conversation
    goes quiet for ``TAIL_CHECK_SECONDS`` after a ``message.new``, the socket looks at
    the database once more. ``delivering`` serialises that check with the handlers.
    """

    TAIL_CHECK_SECONDS = 1.0
    TAIL_GRACE_SECONDS = 0.25
    _tail_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        if await self.close_unauthenticated():
            return
        try:
            self.other = await in_thread(services.peer_resolve)(
                self.user, self.scope["url_route"]["kwargs"]["account"]
            )
        except NotFound:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        except Forbidden:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.room_key = pair_room_key(self.user.pk, self.other.pk)
        self.delivering = asyncio.Lock()
        # Counted as looking at the conversation: no notifications for it meanwhile.
        self.presence_room = self.room_key
        await presence.store().refresh(self.user.pk, self.presence_id, self.room_key)
        await self.join(self.room_key)
        state = await in_thread(selectors.room_state)(self.user, self.other)
        self.room_id: int | None = state["room_id"]
        self.cleared_seq: int = state["cleared_seq"]
        self.typing_active = False
        await self.send_json(
            {
                "type": "room.joined",
                "room": self.room_key,
                "with": user_out(self.other),
                "last_seq": state["last_seq"],
                "read": state["read"],
            }
        )
        after = self.query_param("after")
        self.ahead: set[int] = set()
        self.high = state["last_seq"]
        if after is not None:
            try:
                await self.replay(seq_parse(after, "after"))
            except Invalid as exc:
                await self.send_error(exc)
        await self.start_presence()

    async def replay(self, after: int) -> None:
        """Send the messages after ``after`` from the database, at most ``REPLAY_BATCH``
        of them, then ``sync.done``; ``more`` says the client should ask again (``sync``
        with ``after: last_seq``), so no request costs more than one batch."""
        if after < 0:
            raise Invalid("after: must be at least 0")
        async with self.delivering:
            self.high, self.ahead = max(after, self.cleared_seq), set()
            await self.fill_gap(upto=self.high + dm_setting("REPLAY_BATCH"))
            newest = self.high
            if self.room_id is not None:
                newest = await in_thread(selectors.room_last_seq)(self.room_id)
            more = newest > self.high
            await self.send_json({"type": "sync.done", "last_seq": self.high, "more": more})

    async def fill_gap(self, upto: int | None) -> None:
        while True:
            if self.room_id is None:
                state = await in_thread(selectors.room_state)(self.user, self.other)
                self.room_id = state["room_id"]
                if self.room_id is None:
                    return
                self.cleared_seq = state["cleared_seq"]
            page = await in_thread(selectors.messages_after)(
                room_id=self.room_id, after=self.high, upto=upto
            )
            for message in page:
                await self.deliver(message_out(message, self.room_key), fill=False)
            if len(page) < selectors.PAGE_MAX:
                return

    async def deliver(self, message: dict[str, Any], fill: bool = True) -> None:
        seq = message["seq"]
        if seq <= self.high or seq in self.ahead:
            return
        if fill and seq > self.high + 1:
            await self.fill_gap(upto=seq - 1)
        await self.send_json({"type": "message.new", "message": message})
        self.ahead.add(seq)
        while self.high + 1 in self.ahead:
            self.high += 1
            self.ahead.discard(self.high)

    # --- client frames -------------------------------------------------------------------

    async def frame_message_send(self, frame: Any) -> None:
        """Store, broadcast, then ack (only this socket, only after commit).

        The broadcast goes first because the recipient waits on it; this socket's own
        copy cannot overtake the ack, since its events are handled after this frame."""
        result = await services.run(
            services.message_send,
            sender=self.user,
            recipient=self.other,
            client_id=frame.client_id,
            text=frame.message,
            attachment_ids=frame.attachment_ids,
            reply_to=frame.reply_to,
            view_once=frame.view_once,
        )
        await self.send_json(result.ack())

    async def frame_read(self, frame: Any) -> None:
        await services.run(
            services.room_mark_read, user=self.user, account=handle_of(self.other), seq=frame.seq
        )

    async def frame_message_edit(self, frame: Any) -> None:
        await services.run(
            services.message_edit,
            user=self.user,
            room_key=self.room_key,
            message_id=frame.id,
            text=frame.message,
        )

    async def frame_message_unsend(self, frame: Any) -> None:
        await services.run(
            services.message_unsend, user=self.user, room_key=self.room_key, message_id=frame.id
        )

    async def frame_reaction_set(self, frame: Any) -> None:
        await services.run(
            services.reaction_set,
            user=self.user,
            room_key=self.room_key,
            message_id=frame.id,
            emoji_text=frame.emoji,
        )

    async def frame_reaction_clear(self, frame: Any) -> None:
        await services.run(
            services.reaction_clear, user=self.user, room_key=self.room_key, message_id=frame.id
        )

    async def frame_typing(self, frame: Any) -> None:
        """Relay typing to the other side (the service throttles it)."""
        self.typing_active = frame.active
        await self.broadcast_typing(frame.active)

    async def broadcast_typing(self, active: bool) -> None:
        await services.run(
            services.typing_set, room_key=self.room_key, user=self.user, active=active
        )

    async def frame_sync(self, frame: Any) -> None:
        await self.replay(frame.after)

    async def disconnect(self, code: int) -> None:
        if self._tail_task is not None:
            self._tail_task.cancel()
        if getattr(self, "typing_active", False):
            await self.broadcast_typing(False)

    # --- group events --------------------------------------------------------------------

    async def message_new(self, event: dict[str, Any]) -> None:
        async with self.delivering:
            await self.deliver(event["message"])
        loop = asyncio.get_running_loop()
        self._quiet_at = loop.time() + self.TAIL_CHECK_SECONDS
        if self._tail_task is None or self._tail_task.done():
            self._tail_task = asyncio.create_task(self._check_tail())

    async def _check_tail(self) -> None:
        """Once things are quiet, fill what the layer dropped after the last event; again
        if more events came while we looked."""
        loop = asyncio.get_running_loop()
        while True:
            while (delay := self._quiet_at - loop.time()) > 0:
                await asyncio.sleep(delay)
            looked_at = self._quiet_at
            try:
                await self._fill_tail()
            except Exception as exc:  # the database is down: the next event tries again
                logger.warning("tail check failed for %s: %r", self.room_key, exc)
                return
            if self._quiet_at == looked_at:
                return

    async def _fill_tail(self) -> None:
        # Usually nothing is missing, and one row says so. A message committed just now
        # may still be on its way through the layer: give it a moment before fetching.
        if self.room_id is not None:
            newest = await in_thread(selectors.room_last_seq)(self.room_id)
            if newest <= self.high:
                return
            await asyncio.sleep(self.TAIL_GRACE_SECONDS)
            if newest <= self.high:
                return
        async with self.delivering:
            await self.fill_gap(upto=None)

    async def message_updated(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def seen(self, event: dict[str, Any]) -> None:
        if event["account"] != self.handle:
            await self.send_json(event)

    async def typing(self, event: dict[str, Any]) -> None:
        if event["account"] != self.handle:
            await self.send_json(event)

    async def presence(self, event: dict[str, Any]) -> None:
        if event["account"] != self.handle:
            await self.send_json(event)

    async def room_blocked(self, event: dict[str, Any]) -> None:
        await self.close(code=CLOSE_FORBIDDEN)

    async def layer_recovered(self, event: dict[str, Any]) -> None:
        await super().layer_recovered(event)
        if self.send_closed:
            return
        async with self.delivering:
            await self.fill_gap(upto=None)


class InboxConsumer(FrameConsumer):
    """``/ws/inbox/``: ``inbox.update`` whenever one of the user's conversations changes."""

    async def connect(self) -> None:
        if await self.close_unauthenticated():
            return
        await self.join(inbox_group(self.user.pk), presence_group(self.user.pk))
        await self.start_presence()

    async def inbox_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def presence(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
