"""`shiftproxy explain`: ask every listed proxy's admin API where a request or connection would go, and
render the answers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxy.cli_client import AdminClient, CliError, _run, admin_clients
from proxy.routing.explain import routes, verdict


def cmd_explain(args: argparse.Namespace) -> int:
    return _run(_explain, args)


def _explain(args: argparse.Namespace) -> int:
    query = [("path", args.path), ("method", args.method)]
    if args.authority:
        query.append(("authority", args.authority))
    query += [("header", h) for h in args.header]
    explicit = [("listener", args.listener)] if args.listener else []
    if args.port is not None:
        explicit.append(("port", str(args.port)))
    if args.destination_ip:
        query.append(("destination_ip", args.destination_ip))
    if args.sni:
        query.append(("sni", args.sni))
    clients = admin_clients(args)
    answers, errors = _explain_on(clients, query + explicit)
    if not answers:
        raise CliError("; ".join(errors))
    # with several proxies (a gateway and a sidecar, say) each answers for its own listeners: show in full
    # the ones that route the request, and one line for each that does not
    routed = [a for a in answers if routes(a)]
    shown = routed or sorted(answers, key=lambda a: a["listener"]["role"] != "mesh")[:1]
    others = [a for a in answers if a not in shown]
    if explicit and not routed and len(clients) > 1:
        # the named listener does not route it: say which listener of the other proxies would
        elsewhere, _ = _explain_on([c for c in clients if c.address not in {a["admin"] for a in answers}], query)
        others += elsewhere
    lines = [_verdict(a) for a in others]
    lines += [dict(v, admin=a["admin"]) for a in shown + others for v in a.get("other_listeners") or []]
    several = len(clients) > 1
    if args.output == "json":
        primary = dict(shown[0])
        primary["other_listeners"] = [_verdict(a) for a in shown[1:]] + lines
        print(json.dumps(primary, indent=2))
        return 0
    text = [render_explain(a, admin=a["admin"] if several else None) for a in shown]
    if lines:
        text.append("other listeners:\n" + "".join(_other_line(v, several) for v in lines))
    print("\n".join(text), end="")
    return 0


def _explain_on(clients: list[AdminClient], query: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each proxy's answer (tagged with its admin address), and the errors of those that have none."""
    answers, errors = [], []
    for client in clients:
        try:
            status, payload = client.call("GET", "/explain", query)
        except CliError as exc:  # one proxy down: the others still answer for their listeners
            errors.append(str(exc))
            if len(clients) > 1:
                print(f"Warning: {exc}", file=sys.stderr)
            continue
        if status == 200:
            answers.append({**payload, "admin": client.address})
        else:
            prefix = f"{client.address}: " if len(clients) > 1 else ""
            errors.append(prefix + (payload.get("error") or f"HTTP {status}"))
    return answers, errors


def _verdict(answer: dict[str, Any]) -> dict[str, Any]:
    return {**verdict(answer), "admin": answer["admin"]}


def _other_line(v: dict[str, Any], several: bool) -> str:
    li = v["listener"]
    role = "sidecar" if li["role"] == "mesh" else "gateway"
    where = f"{role} {li['protocol'].upper()} on {li['address']}:{li['port']}"
    if several and v.get("admin"):
        where += f", admin {v['admin']}"
    return f"  {li['name']} ({where}): {v['summary']}\n"


def render_explain(answer: dict[str, Any], admin: str | None = None) -> str:
    """The explain answer as a user reads it: listener, request, host, each rule, then the destinations."""
    li = answer["listener"]
    role = "sidecar" if li["role"] == "mesh" else "gateway"
    at = f", admin {admin}" if admin else ""
    out = [f"config version {answer['config_version']}; listener {li['name']} "
           f"({role} {li['protocol'].upper()} on {li['address']}:{li['port']}{at})"]
    if li["protocol"] == "http":
        req = answer["request"]
        out.append(f"request:  {req['method']} {req['authority']}{req['path']}")
        for name, value in req["headers"].items():
            out.append(f"          {name}: {value}")
        vh = answer.get("virtual_host")
        if vh is None:
            result = answer["result"]
            out.append(f"result:   {result['status']} {result['flags']}: {result['reason']}")
            if result.get("known_hosts"):
                out.append(f"          hosts on this listener: {', '.join(result['known_hosts'])}")
            return "\n".join(out) + "\n"
        vs = f"VirtualService {vh['virtual_service']}" if vh["virtual_service"] else \
            "no VirtualService: the default route to every endpoint"
        out.append(f"host:     {max(vh['domains'], key=len, default=vh['name'])} ({vs})")
    else:
        conn = answer["connection"]
        sni = f" (SNI {conn['sni']})" if conn.get("sni") else ""
        out.append(f"connection: to {conn['destination_ip']}:{conn['port']}{sni}")
    for rule in answer.get("rules") or []:
        label = f"rule {rule['index']}"
        name = rule["name"] if rule.get("virtual_service") else "default route"
        if rule["matched"]:
            out.append(f"{label}:   {name}: MATCH ({rule['why']})")
        else:
            out.append(f"{label}:   {name}: no match")
            out.extend(f"            {reason}" for reason in rule.get("reasons") or [])
    route = answer.get("route")
    result = answer.get("result") or {}
    if route is None:
        status = f"{result['status']} {result.get('flags', '')}: " if result.get("status") else ""
        out.append(f"result:   {status}{result.get('reason', '')}")
        return "\n".join(out) + "\n"
    fault = route.get("fault") or {}
    if fault.get("delay_percent"):
        out.append(f"fault:    delay {fault['delay_seconds']}s for {fault['delay_percent']:.1f}% of requests")
    if fault.get("abort_percent"):
        out.append(f"fault:    abort {fault['abort_status']} for {fault['abort_percent']:.1f}% of requests")
    if "redirect" in route:
        r = route["redirect"]
        target = " ".join(f"{k}={v}" for k, v in r.items() if v is not None and k != "code")
        out.append(f"result:   redirect {r['code']} {target}")
    elif "direct_response" in route:
        out.append(f"result:   direct response {route['direct_response']['status']}")
    else:
        out.append("route:    " + ("each request" if li["protocol"] == "http" else "each new connection")
                   + " picks one destination:")
        for d in route["destinations"]:
            subset = f" subset {d['subset']}" if d.get("subset") else ""
            out.append(f"  {d['probability'] * 100:5.1f}%  {d['host']}:{d['port']}{subset}   "
                       f"(cluster {d['cluster']}, weight {d['weight']})")
            if d.get("problem"):
                out.append(f"          ! {d['problem']}")
            endpoints = d.get("endpoints") or []
            for e in endpoints:
                out.append(f"          endpoint {e['address']}:{e['port']}  version {e['version']}")
            if len(endpoints) > 1:
                unit = "request" if li["protocol"] == "http" else "connection"
                out.append(f"          (one endpoint per {unit}, by {d.get('lb_policy', 'LEAST_REQUEST')})")
    if route.get("rewrite"):
        out.append(f"rewrite:  {', '.join(f'{k}={v}' for k, v in route['rewrite'].items())}")
    if route.get("timeout"):
        out.append(f"timeout:  {route['timeout']}s")
    return "\n".join(out) + "\n"
