"""Where the WebSocket side runs its database work: a fixed set of threads, each keeping
one connection for the life of the process."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync
from django.db import connections

from direct_messages.conf import dm_setting


def _thread_count() -> int:
    """``DIRECT_MESSAGES["DATABASE_THREADS"]``; the PostgreSQL pool must have room for
    one connection per thread beside HTTP's."""
    return int(dm_setting("DATABASE_THREADS"))


class _Threads(ThreadPoolExecutor):
    def __init__(self, count: int) -> None:
        super().__init__(count, thread_name_prefix="dm-db")
        self.count = count


@functools.cache
def database_threads() -> _Threads:
    """The threads that run the sockets' database work, for the life of the process.

    Each keeps its database connection between calls (:func:`in_thread`), so
    they are a fixed set of ``DATABASE_THREADS``, not an event loop's default executor,
    which goes with its loop (and would leak its threads' connections).
    """
    return _Threads(_thread_count())


def database_threads_close(timeout: float = 10.0) -> None:
    """Close the connection each database thread keeps, and stop the threads (at
    shutdown, and before a test database is dropped)."""
    threads = database_threads()
    count = threads.count
    barrier = threading.Barrier(count)

    def close() -> None:  # one per thread: each waits until every thread has one
        barrier.wait(timeout)
        connections.close_all()

    for future in [threads.submit(close) for _ in range(count)]:
        future.result(timeout)
    threads.shutdown()
    database_threads.cache_clear()


def _keeping_connection(func: Any) -> Any:
    """``func``, then what Django does after a request, but only for a connection that
    needs it: one that saw an error, or was left in a transaction, is closed (given
    back to the pool, which drops it if it is broken); a healthy one stays with its
    thread.

    Channels' ``database_sync_to_async`` closes the thread's connections after every
    call, which with PostgreSQL's pool means a checkout and a return per frame (a sixth
    of a send's Python time in the worker, bench/RESULTS.md). The database threads are
    few and live as long as the process, so each keeps one connection instead.
    """

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            for conn in connections.all(initialized_only=True):
                if conn.connection is not None and (
                    conn.errors_occurred
                    or conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]
                ):
                    conn.close_if_unusable_or_obsolete()

    return run


def in_thread(func: Any) -> Any:
    """Run ``func`` on one of the :func:`database_threads`, keeping its connection.

    Not Channels' default single "thread-sensitive" thread: one slow query would then
    stall every socket of the process, and PostgreSQL serves several at once (SQLite's
    writers queue on its lock with a busy timeout). asgiref's public ``SyncToAsync``
    with an executor of our own; the function itself does the connection handling.
    """
    return SyncToAsync(
        _keeping_connection(func), thread_sensitive=False, executor=database_threads()
    )


def in_background(func: Any, *args: Any, name: str) -> None:
    """Run ``func(*args)`` in a thread of its own, closing its database connection after:
    work asked of the task queue, where no queue is installed (the `push` extra)."""

    def run() -> None:
        try:
            func(*args)
        finally:
            connections.close_all()

    threading.Thread(target=run, name=name, daemon=True).start()
