"""`shiftproxy rollout status|promote|pause|resume|abort NAME`: a client of the admin API's /rollouts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from proxy.cli_client import AdminClient, CliError, _run, admin_clients

VERBS = ("status", "promote", "pause", "resume", "abort")
BAR = 20


def add_command(sub: Any, common: argparse.ArgumentParser) -> None:
    rollout = sub.add_parser("rollout", parents=[common], help="show or steer a progressive rollout",
                             description="Show a Rollout's progress, gates and history, or steer it: promote "
                             "skips the current step (--full: all of them), pause holds the weights, resume "
                             "continues (or retries a rolled-back rollout from its first step), abort rolls "
                             "back in steps.")
    rollout.add_argument("verb", choices=VERBS)
    rollout.add_argument("name", nargs="?", help="the Rollout (status without NAME lists them all)")
    rollout.add_argument("-n", "--namespace", default="default")
    rollout.add_argument("--full", action="store_true", help="promote: skip every remaining step")
    rollout.add_argument("-w", "--watch", action="store_true", help="status: redraw until the rollout ends")
    rollout.add_argument("--history", type=int, default=10, metavar="N",
                         help="status: show the last N history entries (default 10; 0 for none)")
    rollout.add_argument("-o", "--output", choices=("text", "json"), default="text")
    rollout.set_defaults(func=lambda args: _run(_rollout, args))


def _driver(args: argparse.Namespace, query: list[tuple[str, str]]) -> AdminClient:
    """Of the admin addresses given, the proxy that drives the rollout (the one serving its route)."""
    clients = admin_clients(args)
    for client in clients if len(clients) > 1 else []:
        status, payload = client.call("GET", "/rollouts", query)
        if status == 200 and payload.get("phase") != "Waiting":
            return client
    return clients[0]


def _list(args: argparse.Namespace) -> int:
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for client in admin_clients(args):  # a rollout is listed from the proxy that drives it
        status, payload = client.call("GET", "/rollouts")
        if status != 200:
            raise CliError(payload.get("error") or f"HTTP {status}")
        for item in payload["rollouts"]:
            key = (item["namespace"], item["name"])
            if key not in items or items[key].get("phase") == "Waiting":
                items[key] = item
    rollouts = [items[k] for k in sorted(items)]
    print(json.dumps({"rollouts": rollouts}, indent=2) if args.output == "json" else render_list(rollouts), end="")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    if args.verb == "status" and not args.name:
        return _list(args)
    if not args.name:
        raise CliError(f"rollout {args.verb} needs the Rollout's NAME")
    query = [("namespace", args.namespace), ("name", args.name)]
    client = _driver(args, query)
    if args.verb != "status":
        if args.full:
            query.append(("full", "1"))
        status, payload = client.call("POST", f"/rollouts/{args.verb}", query, b"")
        if status != 200:
            raise CliError(payload.get("error") or f"HTTP {status}")
        print(f"rollout {args.namespace}/{args.name}: {args.verb} done; now {payload['phase']}, canary weight "
              f"{payload['canaryWeight']}")
        return 0
    while True:
        status, payload = client.call("GET", "/rollouts", query)
        if status != 200:
            raise CliError(payload.get("error") or f"HTTP {status}")
        if args.output == "json":
            print(json.dumps(payload, indent=2))
            return 0
        text = render_status(payload, args.history)
        if not args.watch:
            print(text, end="")
            return 0
        sys.stdout.write("\x1b[H\x1b[2J" + text)
        sys.stdout.flush()
        if payload["phase"] in ("Succeeded", "RolledBack", "Aborted"):
            return 0
        time.sleep(1.0)


def _bar(weight: int) -> str:
    filled = round(BAR * weight / 100)
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def render_list(items: list[dict[str, Any]]) -> str:
    if not items:
        return "No rollouts.\n"
    rows = [["NAMESPACE", "NAME", "PHASE", "STEP", "CANARY WEIGHT", "MESSAGE"]]
    for r in items:
        steps = r.get("steps") or []
        step = f"{min(r.get('step', 0) + 1, len(steps))}/{len(steps)}" if steps else "-"
        rows.append([r["namespace"], r["name"], r["phase"], step, str(r.get("canaryWeight", "-")),
                     r.get("problem") or r.get("message", "")])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "".join("   ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip() + "\n" for row in rows)


def render_status(r: dict[str, Any], history: int = 10) -> str:
    """A readable progress display: the route, the steps with the current one marked, gates, history."""
    weight = int(r["canaryWeight"])
    lines = [f"Rollout {r['namespace']}/{r['name']}: VirtualService {r['virtualService']} {r['route']}",
             f"  phase:    {r['phase']}" + (f"  ({r['problem']})" if r.get("problem") else ""),
             f"  traffic:  {r['stable']} {100 - weight:>3}%  {_bar(weight)}  {r['canary']} {weight:>3}%"]
    steps = r.get("steps") or []
    current = int(r["step"])
    marks = []
    for i, step in enumerate(steps):
        mark = "✔" if i < current or r["phase"] == "Succeeded" else "▶" if i == current else " "
        marks.append(f"    {mark} {i + 1}. {step}")
    lines.append(f"  steps:    {min(current + 1, len(steps))}/{len(steps)}")
    lines.extend(marks)
    a = r.get("analysis") or {}
    gates = []
    if a.get("successRateMin") is not None:
        gates.append(f"successRate >= {a['successRateMin']:g}%")
    if a.get("latencyMaxMs") is not None:
        gates.append(f"p{a['latencyPercentile']:g} <= {a['latencyMaxMs']:g} ms")
    lines.append(f"  analysis: every {a.get('interval', 0):g}s, minRequests {a.get('minRequests', 0)}, "
                 f"{', '.join(gates) or 'no gates'}; failures {r['failures']}/{r['failureLimit']}")
    last = r.get("lastVerdict")
    if last:
        lines.append(f"  last:     {last['result']}: {last['reason']}")
    lines.append(f"  message:  {r.get('message', '')}")
    entries = (r.get("history") or [])[-history:] if history else []
    if entries:
        lines.append("  history:")
        t0 = float(r.get("startedAt") or entries[0]["at"])
        for e in entries:
            detail = e.get("message", "")
            offset = f"+{max(0.0, e['at'] - t0):.1f}s"
            lines.append(f"    {offset:>8}  {e['event']:<12} w={e['weight']:<3} {detail}")
            canary, stable = e.get("canary"), e.get("stable")
            if canary:
                lines.append(f"{'':>12}canary {_values(canary)} | stable {_values(stable or {})}")
    return "\n".join(lines) + "\n"


def _values(v: dict[str, Any]) -> str:
    parts = [f"{v.get('requests', 0)} req", f"{v.get('failures', 0)} failed"]
    if v.get("successRate") is not None:
        parts.append(f"success {v['successRate']:g}%")
    p = next((k for k in v if k.startswith("p") and k.endswith("Ms")), None)
    if p and v[p] is not None:
        parts.append(f"{p[:-2]} {v[p]:g} ms")
    return ", ".join(parts)
