"""``python -m bench`` (``make bench``): run the benchmarks, write the results.

A run merges its scenarios into ``bench/results/full.json`` (``quick.json`` with
``--quick``); a full-size run also regenerates the figures in ``bench/RESULTS.md`` and
the plot ``bench/results/latency.svg``. Examples: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import procs, report, scenarios
from bench.scenarios import Options, say
from tests.support import Stack

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT = ["embedded", "notify", "scaled", "reads", "idle"]
ALL = [*DEFAULT, "profile"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short: for development")
    parser.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated of {ALL}")
    parser.add_argument("--servers", help="daphne,uvicorn for scaled/profile")
    parser.add_argument("--layers", help="redis,pubsub for scaled/profile")
    parser.add_argument("--seconds", type=float, help="measured seconds per load step")
    parser.add_argument("--pairs", type=int, help="sender/recipient pairs (sockets = 2 x pairs)")
    parser.add_argument("--signup", choices=["api", "bulk"], help="how load accounts are made")
    parser.add_argument("--fixed-rate", type=float, help="rate of the scaled-vs-floor comparison")
    parser.add_argument("--rates", help="comma-separated rates to run instead of a sweep")
    parser.add_argument("--sweep-steps", type=int, help="at most this many steps per sweep")
    parser.add_argument("--notify-rate", type=float, help="rate of notify (default 200)")
    parser.add_argument("--report-rate", type=float, help="reports/s beside notify's load")
    parser.add_argument("--idle-count", type=int, help="idle sockets (default 5000)")
    parser.add_argument("--idle-servers", help="daphne,uvicorn for idle")
    parser.add_argument("--profile-rate", type=float, help="offered rate while profiling")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native")
    parser.add_argument(
        "--pg-synchronous-commit",
        action="store_true",
        help="keep PostgreSQL's synchronous_commit on for the load tests' database",
    )
    parser.add_argument("--no-retry", action="store_true", help="do not re-measure failed steps")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite RESULTS.md and the plot from full.json"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and databases' dir")
    return parser.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    opts = Options.quick_mode() if args.quick else Options()
    for name in (
        "seconds",
        "pairs",
        "fixed_rate",
        "sweep_steps",
        "idle_count",
        "profile_rate",
        "notify_rate",
        "report_rate",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(opts, name, value)
    if args.rates:
        opts.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.signup:
        opts.signup = args.signup
    for name in ("servers", "layers", "idle_servers"):
        value = getattr(args, name)
        if value:
            setattr(opts, name, [v.strip() for v in value.split(",") if v.strip()])
    opts.profile_dir = None if args.no_write else RESULTS_DIR
    opts.profile_native = args.profile_native
    opts.pg_synchronous_commit = args.pg_synchronous_commit
    opts.retry_failed_steps = not args.no_retry
    return opts


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        merged = json.loads((RESULTS_DIR / "full.json").read_text())
        (RESULTS_DIR / "latency.svg").write_text(report.svg_plot(merged))
        report.write_results_md(merged)
        profile_path = RESULTS_DIR / "profile.json"
        if profile_path.exists():
            report.write_profile_md(json.loads(profile_path.read_text()))
        return 0
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(ALL)
    if unknown:
        print(f"unknown scenarios: {sorted(unknown)}; choose from {ALL}", file=sys.stderr)
        return 2
    opts = options(args)
    procs.raise_nofile_limit()
    command = "make bench" + (f' BENCH_ARGS="{shlex.join(argv)}"' if argv else "")
    started = time.monotonic()
    results: dict[str, Any] = {"environment": report.environment()}
    try:
        results["environment"]["postgres_durable_commit_ms"] = procs.commit_latency_ms()
    except Exception as exc:
        results["environment"]["postgres_durable_commit_ms"] = repr(exc)
    results["environment"]["pg_synchronous_commit"] = "on" if opts.pg_synchronous_commit else "off"
    failed = []
    with Stack(keep_tmp=args.keep_tmp) as stack:
        say(f"temp dir {stack.tmp}; scenarios {wanted}; {'quick' if opts.quick else 'full'} mode")
        try:
            for name in wanted:
                t0 = time.monotonic()
                try:
                    results[name] = getattr(scenarios, name)(stack, opts)
                    results[name + "_meta"] = {
                        "seconds": round(time.monotonic() - t0, 1),
                        # As run: --rates, --servers and the like change what it measured.
                        "command": command,
                        "date": results["environment"]["date"],
                        "load_average": results["environment"]["load_average_at_start"],
                        "commit": results["environment"]["commit"],
                    }
                except KeyboardInterrupt:
                    raise
                except Exception:
                    failed.append(name)
                    traceback.print_exc()
                    say(f"{name} failed; logs in {stack.tmp} (use --keep-tmp to keep them)")
        except KeyboardInterrupt:
            say("interrupted: stopping everything")
            return 130
    results["wall_minutes"] = round((time.monotonic() - started) / 60, 1)
    results["command"] = command
    rows = report.targets(results)
    if rows:
        print(report.targets_table(rows))
    for title, table in (
        ("sweeps", report.sweep_table(results) if report.latency_rows(results) else ""),
        ("fixed rate", report.load_table(results) if results.get("scaled") else ""),
        ("cpu per message", report.cpu_table(results) if report.latency_rows(results) else ""),
        ("notifications and reports", report.notify_table(results)),
        ("redis", report.redis_table(results)),
        ("reads", report.reads_table(results)),
        ("idle", report.idle_table(results)),
    ):
        if table:
            print(f"\n## {title}\n\n{table}")
    if "profile" in results:
        print("\n## profile\n\n" + json.dumps(results["profile"], indent=1)[:6000])
    if not args.no_write:
        write(results, opts)
    say(f"done in {results['wall_minutes']} min" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


def write(results: dict[str, Any], opts: Options) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    if "profile" in results:
        for run in results["profile"].values():
            _trim_raw(Path(run["raw"]))
        profile = {
            "environment": results["environment"],
            "command": results["command"],
            **results["profile"],
        }
        (RESULTS_DIR / "profile.json").write_text(json.dumps(profile, indent=1))
        if not opts.quick:
            report.write_profile_md(profile)
        results = {k: v for k, v in results.items() if not k.startswith("profile")}
    path = RESULTS_DIR / ("quick.json" if opts.quick else "full.json")
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text())
        except ValueError:
            merged = {}
    if not any(k in results for k in DEFAULT):
        return
    merged.update(results)
    path.write_text(json.dumps(merged, indent=1))
    say(f"wrote {path}")
    if not opts.quick:
        (RESULTS_DIR / "latency.svg").write_text(report.svg_plot(merged))
        report.write_results_md(merged)
        say(f"wrote {report.RESULTS_MD}")


def _trim_raw(path: Path, keep: int = 400) -> None:
    """Keep the heaviest stacks only: the raw file stays small enough to commit."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    lines.sort(key=lambda ln: -int(ln.rpartition(" ")[2]) if ln.rpartition(" ")[2].isdigit() else 0)
    path.write_text("\n".join(lines[:keep]) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
