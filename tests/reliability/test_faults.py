"""Faults during steady traffic from retrying clients (issue #8, item 6), shortened.

Each test starts its own processes (``make faults`` runs the same scenarios at full
length): nothing may be lost or duplicated, and traffic must recover after the fault.
The PostgreSQL and Redis faults use private servers whatever the configuration.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from reliability import scenarios
from reliability.infra import postgres_bindir
from reliability.report import clean
from tests.support import Stack, need, redis_server_binary

pytestmark = [pytest.mark.live, pytest.mark.timeout(120)]


@pytest.fixture
def stack() -> Iterator[Stack]:
    with Stack() as running:
        yield running


def assert_recovered(result: dict[str, Any]) -> None:
    summary = {k: result[k] for k in ("sent", "acked", "stored", "delivered", "lost")}
    summary |= {"duplicated": result["duplicated_detail"], "errors": result["errors"]}
    assert result["drained"], summary
    assert result["lost"] == 0, summary
    assert result["duplicated"] == 0, summary
    assert clean(result), result
    assert result["sent"] > 0 and result["stored"] == result["sent"] == result["delivered"]
    recovery = result["recovery"]
    # traffic went on after the fault: acked and delivered again, and caught up
    assert recovery["first_ack_s"] is not None, recovery
    assert recovery["first_delivery_s"] is not None, recovery
    assert recovery["catch_up_s"] is not None and recovery["catch_up_s"] < 20, recovery


def test_redis_killed_and_restarted_under_two_servers(stack, live_database_url):
    need(redis_server_binary() is not None, "needs the redis-server binary")
    result = scenarios.fault_redis(stack, scenarios.SHORT, live_database_url)
    assert_recovered(result)
    # Redis down never stops sends: they are acked all along (PROTOCOL.md guarantee 5)
    assert result["longest_ack_gap_s"] < 2.0, result


def test_server_killed_clients_fail_over_and_resume(stack, live_database_url):
    need(redis_server_binary() is not None, "needs the redis-server binary")
    plan = replace(scenarios.SHORT, seconds=10.0)  # the restart itself takes seconds
    result = scenarios.fault_server(stack, plan, live_database_url)
    assert_recovered(result)
    assert result["reconnects"].get("sender", 0) + result["reconnects"].get("recipient", 0) > 0


def test_postgres_restarted(stack):
    need(postgres_bindir() is not None, "needs PostgreSQL's initdb, pg_ctl and postgres")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            need(False, "running as root needs a 'postgres' user to run PostgreSQL as")
    need(redis_server_binary() is not None, "needs the redis-server binary")
    result = scenarios.fault_postgres(stack, scenarios.SHORT)
    assert_recovered(result)


def test_sqlite_locked_by_another_writer(stack):
    plan = replace(scenarios.SHORT, down=4.0, seconds=9.0)
    result = scenarios.fault_sqlite(stack, plan)
    assert_recovered(result)
    # the lock really held writes up: nothing was acked for most of it
    assert result["longest_ack_gap_s"] >= 0.5 * plan.down, result
