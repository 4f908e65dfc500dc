"""Markdown tables of fault and soak results."""

from __future__ import annotations

from typing import Any

from reliability.scenarios import FAULTS


def clean(result: dict[str, Any]) -> bool:
    """Nothing lost, duplicated, reordered or left unacked; everything reconciled."""
    if "failed" in result:
        return False
    return (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["unacked"] == 0
        and result["out_of_order"] == 0
        and result["stored_seq_gaps"] == 0
        and result["ack_mismatch"] == 0
        and result["acked_not_stored"] == 0
        and result["stored"] == result["sent"]
    )


def _s(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def fault_line(name: str, r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"{name}: FAILED {r['failed']}"
    rec = r.get("recovery", {})
    return (
        f"{name}: sent {r['sent']} acked {r['acked']} stored {r['stored']} delivered "
        f"{r['delivered']} (live {r['delivered_live']}, replay {r['delivered_replay']}) "
        f"lost {r['lost']} dup {r['duplicated']}; first ack {_s(rec.get('first_ack_s'))} s, "
        f"first delivery {_s(rec.get('first_delivery_s'))} s, catch-up "
        f"{_s(rec.get('catch_up_s'))} s"
    )


def faults_table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        "| fault | setup | sent | acked | stored | delivered live + after resume | lost | dup "
        "| retried | reconnects | longest ack gap s | first ack s | first delivery s "
        "| full catch-up s | ack max ms |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name, r in results.items():
        title = FAULTS.get(name, name)
        if "failed" in r:
            rows.append(f"| {title} | FAILED: {r['failed']} |" + " |" * 13)
            continue
        rec = r.get("recovery", {})
        reconnects = sum(v for k, v in r["reconnects"].items() if not k.endswith("_churn"))
        rows.append(
            f"| {title} | {r['setup']} | {r['sent']} | {r['acked']} | {r['stored']} "
            f"| {r['delivered']} = {r['delivered_live']} + {r['delivered_replay']} "
            f"| {r['lost']} | {r['duplicated']} | {r['retried_messages']} | {reconnects} "
            f"| {_s(r.get('longest_ack_gap_s'))} | {_s(rec.get('first_ack_s'))} "
            f"| {_s(rec.get('first_delivery_s'))} | {_s(rec.get('catch_up_s'))} "
            f"| {_s(r['ack_ms']['max'])} |"
        )
    notes = (
        "\nRecovery times count from the fault's end (Redis / server / PostgreSQL back up "
        "and listening, SQLite lock released). *Full catch-up*: every message created "
        "before then acked and delivered. *Retried*: messages sent more than once with "
        "the same client_id."
    )
    return head + "\n".join(rows) + "\n" + notes


def soak_table(r: dict[str, Any]) -> str:
    plan = r["plan"]
    lines = [
        f"Soak: {plan['seconds']:g} s at {plan['rate']:g} msg/s, {plan['pairs']} pairs, "
        f"churn {plan['churn']} s; {r['setup']}.",
        "",
        f"sent {r['sent']}, acked {r['acked']}, stored {r['stored']}, delivered "
        f"{r['delivered']} (live {r['delivered_live']}, after resume "
        f"{r['delivered_replay']}), lost {r['lost']}, duplicated {r['duplicated']}, "
        f"reconnects {r['reconnects']}, ack p50/p99/max "
        f"{r['ack_ms']['p50']}/{r['ack_ms']['p99']}/{r['ack_ms']['max']} ms.",
        "",
        "| series | start | end | max | after clients closed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in r["summary"].items():
        lines.append(
            f"| {name} | {_s(s['start'])} | {_s(s['end'])} | {_s(s['max'])} "
            f"| {_s(s['after_close'])} |"
        )
    return "\n".join(lines)
