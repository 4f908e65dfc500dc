"""bench/RESULTS.md's profile section names the command that made it, so that its
figures can be reproduced: ``--profile-rate`` or ``--servers`` change what it shows."""

from __future__ import annotations

from typing import Any

from bench import report

RUN: dict[str, Any] = {
    "load": {
        "rate_target": 100.0,
        "delivery_ms": {"p50": 4.2, "p99": 6.1},
        "lost": 0,
        "redis_commands_per_message": 3.4,
    },
    "profile": {"threads": {}},
}


def test_the_profile_section_names_the_command_it_was_run_with() -> None:
    command = 'make bench BENCH_ARGS="--only profile --profile-rate 100"'
    profile = {"environment": {"date": "d", "commit": "c"}, "command": command, "embedded": RUN}
    section = report.profile_section(profile)
    assert f"with `{command}`" in section
    assert "#### embedded at 100 messages/s" in section


def test_a_profile_written_before_the_command_was_kept_names_the_plain_one() -> None:
    profile = {"environment": {"date": "d", "commit": "c"}, "embedded": RUN}
    assert f"with `{report.COMMANDS['profile']}`" in report.profile_section(profile)
