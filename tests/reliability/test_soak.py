"""A short soak (issue #8, item 7): two servers, steady traffic with connect/disconnect
churn; nothing lost or duplicated, and no growth of file descriptors or database
connections beyond a small bound. ``make soak`` runs it for 20 minutes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from reliability import scenarios
from reliability.report import clean
from tests.support import Stack, need, redis_server_binary

pytestmark = [pytest.mark.live, pytest.mark.timeout(120)]


@pytest.fixture
def stack() -> Iterator[Stack]:
    with Stack() as running:
        yield running


def test_soak_with_churn_loses_nothing_and_leaks_nothing(stack, live_database_url):
    need(redis_server_binary() is not None, "needs the redis-server binary")
    plan = scenarios.Plan(
        rate=20.0, pairs=6, seconds=18.0, churn=(1.0, 3.0), sample_every=3.0, drain=30.0
    )
    admin = scenarios.configured_postgres()
    result = scenarios.soak(stack, plan, live_database_url, admin, nginx=False)
    summary = {k: result[k] for k in ("sent", "acked", "stored", "delivered", "lost")}
    assert result["drained"], summary
    assert result["lost"] == 0 and result["duplicated"] == 0, result["duplicated_detail"]
    assert clean(result), result
    # churn happened: every client closed and reconnected several times
    assert result["reconnects"].get("recipient_churn", 0) >= plan.pairs
    assert result["reconnects"].get("sender_churn", 0) >= plan.pairs
    s = result["summary"]
    for i in range(2):
        fds = s[f"server{i}_fds"]
        assert fds["max"] - fds["start"] <= 25, fds
        assert fds["after_close"] <= fds["start"] + 10, fds
    # churn must not crash consumers (a crash skips their cleanup)
    for log in stack.tmp.glob("daphne-*.log"):
        text = log.read_text(errors="replace")
        assert "Exception inside application" not in text, text[-3000:]
    if admin:
        pg = s["pg_connections"]
        pool = int(os.environ.get("DB_POOL_MAX_SIZE", "20"))
        assert pg["max"] <= 2 * pool, pg
        assert pg["after_close"] <= pg["start"] + 10, pg
