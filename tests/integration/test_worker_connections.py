"""The consumers' worker threads keep their database connection between frames
(``direct_messages.db.in_thread``), and give up one that failed."""

import asyncio

import pytest
from django.db import DatabaseError, connection, transaction

from direct_messages.db import database_threads_close, in_thread

pytestmark = pytest.mark.django_db(transaction=True)


def _backend() -> object:
    """The thread's connection to the database server, as the driver holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.connection


def _held() -> object:
    """What the thread still holds from its previous call (None: nothing)."""
    return connection.connection


def _fail() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")


def _leave_a_transaction_open() -> None:
    transaction.set_autocommit(False)
    _backend()


@pytest.fixture(autouse=True)
def _one_database_thread(settings):
    """One database thread, so that consecutive calls run on the same thread."""
    database_threads_close()
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "DATABASE_THREADS": 1}
    yield
    database_threads_close()


def _in_one_worker_thread(*funcs):
    """Run each of ``funcs`` through ``in_thread``, in turn, on new event loops (the
    database threads outlive any loop)."""
    results = []
    for func in funcs:
        try:
            results.append(asyncio.run(in_thread(func)()))
        except DatabaseError as exc:
            results.append(exc)
    return results


def test_a_worker_thread_keeps_its_connection_between_calls():
    first, held, second = _in_one_worker_thread(_backend, _held, _backend)
    assert first is not None and first is held is second


def test_a_connection_that_failed_is_given_up():
    _, failed, held, after = _in_one_worker_thread(_backend, _fail, _held, _backend)
    assert isinstance(failed, DatabaseError)
    if connection.vendor == "postgresql":  # given back to the pool, which keeps it if usable
        assert held is None
    else:  # SQLite: checked, still usable, so kept (as Django's own cleanup does)
        assert held is not None
    assert after is not None


def test_a_connection_left_in_a_transaction_is_given_up():
    _, _, held = _in_one_worker_thread(_backend, _leave_a_transaction_open, _held)
    assert held is None


def test_closing_the_database_threads_closes_their_connections():
    (kept,) = _in_one_worker_thread(_backend)
    if connection.vendor == "postgresql":
        available = connection.pool.get_stats()["pool_available"]
        database_threads_close()
        assert connection.pool.get_stats()["pool_available"] == available + 1  # given back
    else:
        database_threads_close()
        with pytest.raises(Exception, match="closed"):
            kept.execute("SELECT 1")
    (held,) = _in_one_worker_thread(_held)
    assert held is None  # a new thread, with nothing kept
