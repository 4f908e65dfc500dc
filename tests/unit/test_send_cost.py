"""bench/send_cost.py, whose figures bench/RESULTS.md quotes, runs on a fresh checkout
and reports what it says it does."""

from __future__ import annotations

import os
import re

from tests.support import PY, run


def test_send_cost_reports_the_cpu_and_statements_of_a_send() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    out = run([PY, "bench/send_cost.py", "20"], env, timeout=120)
    found = re.fullmatch(
        r"sqlite: (\d+\.\d\d) ms of CPU a send, (\d+) statements \(BEGIN and COMMIT included\)\n",
        out,
    )
    assert found, out
    # The ORM send on SQLite: BEGIN, the room's lock, the block check, the window's read
    # and write, the insert, the room's and members' updates, COMMIT, at the least.
    assert float(found[1]) > 0 and int(found[2]) >= 9
