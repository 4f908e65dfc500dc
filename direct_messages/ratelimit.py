"""The limits that are not HTTP throttles.

* The send rate window: in the database (:class:`SendWindow`), moved in the send's own
  transaction, so it is exact across processes whether or not Redis is up.
* The typing throttle: in Redis when configured, so it holds across processes; in
  process memory otherwise (the embedded, single-process default).
* Each socket's frame budget, which lives with the socket.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from functools import cache
from typing import Any

from direct_messages.conf import dm_setting
from direct_messages.errors import RateLimited
from direct_messages.models import SendWindow

logger = logging.getLogger(__name__)


@cache
def _redis() -> Any:
    import redis

    return redis.Redis.from_url(dm_setting("REDIS_URL"), socket_timeout=0.5)


# --- sends ----------------------------------------------------------------------------


def send_window_take(user_id: int, now: dt.datetime) -> None:
    """Take a place for a send at ``now`` in ``user_id``'s window, or raise RateLimited.

    Call it inside the send's transaction, after the room's lock: the window row is
    locked until the message commits, so only stored messages count and a refused or
    rolled-back send takes nothing. Every user has a row (:func:`send_window_create`);
    one inserted by ``bulk_create`` or raw SQL, which send no ``post_save``, gets it
    here.
    """
    window, _ = SendWindow.objects.select_for_update().get_or_create(user_id=user_id)
    epoch = now.timestamp()
    refusal = send_window_refusal(window.recent, epoch)
    if refusal is not None:
        raise refusal
    recent = list(window.recent)
    since = epoch - dm_setting("SEND_RATE_WINDOW_SECONDS")
    if recent and (len(recent) >= dm_setting("SEND_RATE_LIMIT") or recent[0] <= since):
        del recent[0]  # one at most: enough to keep the window from growing
    window.recent = [*recent, epoch]
    window.save(update_fields=["recent"])


def send_window_create(sender: Any, instance: Any, created: bool, raw: bool, **kwargs: Any) -> None:
    """``post_save`` of the user model: a new user gets their (empty) window row."""
    if created and not raw:
        SendWindow.objects.get_or_create(user_id=instance.pk)


def send_window_refusal(recent: list[float], epoch: float) -> RateLimited | None:
    """None if a window holding the send times ``recent`` (oldest first) has a place
    at ``epoch``; else the refusal, which waits for the limit-th newest to leave it.

    The window may hold sends older than that (a send drops at most one); they do not
    change the answer."""
    limit, window = dm_setting("SEND_RATE_LIMIT"), dm_setting("SEND_RATE_WINDOW_SECONDS")
    if len(recent) < limit or recent[-limit] <= epoch - window:
        return None
    wait = math.ceil(recent[-limit] + window - epoch)
    return RateLimited(f"at most {limit} messages per {window} seconds", retry_after=max(1, wait))


# --- typing ----------------------------------------------------------------------------

_typing_lock = threading.Lock()
_typing_until: dict[str, float] = {}


def _typing_key(room_key: str, user_id: int) -> str:
    return f"dm:typing:{room_key}:{user_id}"


def typing_claim(room_key: str, user_id: int, seconds: float) -> bool:
    """True if ``user_id`` may broadcast typing in ``room_key`` now (and takes the turn);
    False while an earlier broadcast from any of their sockets is under ``seconds`` old."""
    key = _typing_key(room_key, user_id)
    if dm_setting("REDIS_URL"):
        try:
            return bool(_redis().set(key, 1, nx=True, px=max(1, int(seconds * 1000))))
        except Exception as exc:  # Redis down: let typing through rather than lose it
            logger.warning("typing throttle skipped, Redis unavailable: %r", exc)
            return True
    now = time.monotonic()
    with _typing_lock:
        if _typing_until.get(key, 0.0) > now:
            return False
        _typing_until[key] = now + seconds
        if len(_typing_until) > 10_000:  # forget expired turns now and then
            for stale in [k for k, until in _typing_until.items() if until <= now]:
                del _typing_until[stale]
        return True


def typing_release(room_key: str, user_id: int) -> None:
    """Typing stopped: the next start is broadcast at once."""
    key = _typing_key(room_key, user_id)
    if dm_setting("REDIS_URL"):
        try:
            _redis().delete(key)
        except Exception as exc:
            logger.warning("typing throttle not released, Redis unavailable: %r", exc)
        return
    with _typing_lock:
        _typing_until.pop(key, None)


# --- frames ----------------------------------------------------------------------------


class FrameBudget:
    """A token bucket: ``burst`` frames at once, refilled at ``rate`` a second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> float:
        """0 if a frame may go now (and takes its place), else the seconds to wait."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
