"""``python -m reliability`` (``make faults``, ``make soak``): faults and a soak under
load (reliability/README.md). Each writes ``reliability/results/{faults,soak}.json``
(``--out`` to change) and prints a markdown table; the exit status is 1 if anything
was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.procs import git_commit, raise_nofile_limit, server_env
from reliability import report, scenarios
from reliability.infra import PrivateCluster
from reliability.scenarios import FAULTS, Plan, say
from tests.support import POSTGRES_ADMIN_URL, Stack, migrate

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    faults = sub.add_parser("faults", help="each fault during steady traffic")
    faults.add_argument(
        "--only", default=",".join(FAULTS), help=f"comma-separated of {list(FAULTS)}"
    )
    faults.add_argument("--seconds", type=float, default=40.0, help="traffic per fault")
    faults.add_argument("--fault-at", type=float, default=10.0, help="seconds into the traffic")
    faults.add_argument("--down", type=float, default=5.0, help="how long each fault lasts")
    faults.add_argument(
        "--db",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="database for the redis and server faults (postgres: a temp database on "
        "BENCH_POSTGRES_URL, else SQLite)",
    )
    soak = sub.add_parser("soak", help="long steady traffic with connect/disconnect churn")
    soak.add_argument("--minutes", type=float, default=20.0)
    soak.add_argument("--seconds", type=float, help="overrides --minutes")
    soak.add_argument("--sample-every", type=float, default=30.0)
    soak.add_argument("--churn", default="2,6", help="reconnect every LO,HI seconds; 0 for none")
    soak.add_argument("--direct", action="store_true", help="no nginx: clients split over both")
    for p, rate in ((faults, 30.0), (soak, 20.0)):
        p.add_argument("--rate", type=float, default=rate, help="new messages per second")
        p.add_argument("--pairs", type=int, default=10, help="sender/recipient pairs")
        p.add_argument("--out", type=Path, help="JSON file to write")
        p.add_argument("--keep-tmp", action="store_true", help="keep logs and databases")
    return parser.parse_args(argv)


def shared_postgres_ok() -> bool:
    import psycopg

    try:
        with psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", connect_timeout=3):
            return True
    except Exception:
        return False


def run_faults(args: argparse.Namespace) -> dict[str, Any]:
    plan = replace(
        scenarios.FULL,
        rate=args.rate,
        pairs=args.pairs,
        seconds=args.seconds,
        fault_at=args.fault_at,
        down=args.down,
    )
    results: dict[str, Any] = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in FAULTS:
            raise SystemExit(f"unknown fault {name!r}; one of {list(FAULTS)}")
        say(f"fault {name}: {FAULTS[name]}")
        with Stack(keep_tmp=args.keep_tmp) as stack:
            try:
                if name in {"redis", "server"}:
                    kind = args.db if args.db == "sqlite" or shared_postgres_ok() else "sqlite"
                    db = scenarios.new_database(stack, kind)
                    results[name] = getattr(scenarios, f"fault_{name}")(stack, plan, db)
                else:
                    results[name] = getattr(scenarios, f"fault_{name}")(stack, plan)
            except Exception as exc:
                traceback.print_exc()
                results[name] = {"failed": repr(exc)}
            _server_tracebacks(stack, results[name])
        say(report.fault_line(name, results[name]))
    return results


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    churn = None
    if args.churn not in {"0", "", "none"}:
        lo, hi = (float(x) for x in args.churn.split(","))
        churn = (lo, hi)
    plan = Plan(
        rate=args.rate,
        pairs=args.pairs,
        seconds=seconds,
        churn=churn,
        sample_every=args.sample_every,
        drain=300.0,  # a shared machine may have let a backlog build up
    )
    with Stack(keep_tmp=args.keep_tmp) as stack:
        if shared_postgres_ok():
            db = stack.postgres_database()
            admin = f"{POSTGRES_ADMIN_URL}/postgres"
        else:
            cluster = PrivateCluster(stack).init()
            db = cluster.create_database()
            admin = cluster.admin_url
        migrate(server_env(db))
        result = scenarios.soak(stack, plan, db, admin, nginx=not args.direct)
        _server_tracebacks(stack, result)
    return result


def _server_tracebacks(stack: Stack, result: dict[str, Any]) -> None:
    """How many tracebacks each server logged (expected while a database is down)."""
    counts = {}
    for log in sorted(stack.tmp.glob("*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            counts[log.stem] = text.count("Traceback")
    result["server_tracebacks"] = counts


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    started = time.time()
    if args.command == "faults":
        body: dict[str, Any] = {"faults": run_faults(args)}
        table = report.faults_table(body["faults"])
        ok = all(report.clean(r) for r in body["faults"].values())
    else:
        body = {"soak": run_soak(args)}
        table = report.soak_table(body["soak"])
        ok = report.clean(body["soak"])
    body["commit"] = git_commit()
    body["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body["wall_seconds"] = round(time.time() - started, 1)
    out = args.out or RESULTS_DIR / f"{args.command}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {out} and {out.with_suffix('.md')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
