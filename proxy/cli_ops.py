"""kubectl-like commands that talk to a running proxy's admin API: apply, delete, get, explain.

They are thin clients (stdlib urllib): the proxy does the validating, persisting and swapping, and
answers only when the change is serving, so `apply` printing `serving config version N` means it is live.
The admin address comes from `--admin HOST:PORT`, else `$SHIFTPROXY_ADMIN`, else 127.0.0.1:15000.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml

from proxy.config.load import iter_config_files
from proxy.gatewayapi import kinds as gateway_api
from proxy.routing.explain import routes, verdict

DEFAULT_ADMIN = "127.0.0.1:15000"
ADMIN_ENV = "SHIFTPROXY_ADMIN"
GROUP = "networking.istio.io"

# every name kubectl accepts for the Istio networking kinds
KIND_NAMES: dict[str, str] = {}
for _kind, _short, _plural in (("VirtualService", "vs", "virtualservices"),
                               ("DestinationRule", "dr", "destinationrules"),
                               ("Gateway", "gw", "gateways"),
                               ("ServiceEntry", "se", "serviceentries"),
                               ("WorkloadEntry", "we", "workloadentries")):
    for _name in (_kind.lower(), _short, _plural):
        KIND_NAMES[_name] = _kind
        KIND_NAMES[f"{_name}.{GROUP}"] = _kind
PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules", "Gateway": "gateways",
           "ServiceEntry": "serviceentries", "WorkloadEntry": "workloadentries"}
# the Gateway API kinds and core Services. With both APIs installed kubectl resolves `gateway(s)` to the
# Gateway API's (its group sorts first) and `gw` to Istio's; the qualified names always disambiguate
for _kind, _short, _plural in ((gateway_api.GATEWAY, "gtw", "gateways"), ("HTTPRoute", "", "httproutes"),
                               ("TCPRoute", "", "tcproutes"), ("TLSRoute", "", "tlsroutes"),
                               ("ReferenceGrant", "", "referencegrants"), ("Service", "svc", "services")):
    _group = gateway_api.group_of(_kind)
    _single = gateway_api.written_kind(_kind).lower()
    for _name in filter(None, (_short, _plural, _single)):
        KIND_NAMES[_name] = _kind
        if _group:
            KIND_NAMES[f"{_name}.{_group}"] = _kind
    PLURALS[_kind] = _plural
for _name in ("rollout", "rollouts", "ro", "rollout.shiftproxy.io", "rollouts.shiftproxy.io"):
    KIND_NAMES[_name] = "Rollout"
PLURALS["Rollout"] = "rollouts"
OTHER_GROUPS = {"Rollout": "shiftproxy.io"}  # kinds outside networking.istio.io and the Gateway API


class CliError(Exception):
    """A one-line message for stderr; exit status 1."""


# admin client ---------------------------------------------------------------------------------------


class AdminClient:
    def __init__(self, address: str, timeout: float = 60.0) -> None:
        address = address.strip()
        if "://" in address:
            address = urllib.parse.urlsplit(address).netloc
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise CliError(f"admin address must be HOST:PORT, got {address!r}")
        self.address = f"{host or '127.0.0.1'}:{port}"
        self.timeout = timeout

    def call(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
             body: bytes | None = None, content_type: str = "application/json") -> tuple[int, Any]:
        """(status, decoded JSON) for any status; CliError when the proxy cannot be reached."""
        url = f"http://{self.address}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            request.add_header("content-type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            detail = getattr(reason, "strerror", None) or reason
            raise CliError(f"cannot reach the shiftproxy admin API at {self.address}: is `shiftproxy run` "
                           f"running? ({detail})") from exc
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, {"error": raw.decode("utf-8", "replace").strip()}


def admin_clients(args: argparse.Namespace) -> list[AdminClient]:
    """Every admin address given (comma-separated): the first takes changes, the others are proxies
    that read the same config directory and are waited for."""
    text = args.admin or os.environ.get(ADMIN_ENV) or DEFAULT_ADMIN
    return [AdminClient(a) for a in text.split(",") if a.strip()] or [AdminClient(DEFAULT_ADMIN)]


def admin_client(args: argparse.Namespace) -> AdminClient:
    return admin_clients(args)[0]


def wait_for_peers(args: argparse.Namespace, objects: list[dict[str, Any]], timeout: float = 10.0) -> None:
    """Return once every other proxy listed serves exactly what the first one does for these objects
    (they pick the change up from the shared directory); CliError naming the laggard otherwise."""
    primary, *peers = admin_clients(args)

    def served(client: AdminClient, obj: dict[str, Any]) -> list[Any]:
        query = [("kind", obj["kind"]), ("namespace", obj["namespace"]), ("name", obj["name"])]
        status, payload = client.call("GET", "/objects", query)
        return [i["object"] for i in payload.get("objects") or []] if status == 200 else [None]

    wanted = [served(primary, obj) for obj in objects]
    deadline = time.monotonic() + timeout
    for peer in peers:
        while [served(peer, obj) for obj in objects] != wanted:
            if time.monotonic() > deadline:
                raise CliError(f"the proxy at {peer.address} does not serve the change after {timeout:.0f} s: "
                               "does it read the same config directory?")
            time.sleep(0.05)


# registration ----------------------------------------------------------------------------------------

NAMESPACE_HELP = ("namespace of the objects that name none (default: default); an object naming another "
                  "namespace is refused, as kubectl does")


def add_commands(sub: Any) -> None:
    """Register apply, delete, get and explain on the `shiftproxy` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", metavar="HOST:PORT[,HOST:PORT...]",
                        help=f"admin API of the running proxy (default ${ADMIN_ENV} or {DEFAULT_ADMIN}); with "
                        "several, changes go to the first and wait until the others, reading the same config "
                        "directory, serve them too")

    apply = sub.add_parser("apply", parents=[common], help="create or replace objects in the running proxy",
                           description="Create or replace Istio objects in the running proxy. Checks the "
                           "whole resulting config first; prints the version serving them once it is live.")
    apply.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-",
                       help="YAML file, directory of YAML files, or - for stdin (repeatable)")
    apply.add_argument("--dry-run", action="store_true", help="check and report; change nothing")
    apply.add_argument("-n", "--namespace", help=NAMESPACE_HELP)
    apply.set_defaults(func=cmd_apply)

    delete = sub.add_parser("delete", parents=[common], help="delete objects from the running proxy",
                            description="Delete the objects named (kind, namespace, name) in the files.")
    delete.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-")
    delete.add_argument("--dry-run", action="store_true", help="check and report; change nothing")
    delete.add_argument("-n", "--namespace", help=NAMESPACE_HELP)
    delete.set_defaults(func=cmd_delete)

    get = sub.add_parser("get", parents=[common], help="list or show objects the proxy is serving",
                         description="List or show the objects the proxy is serving. KIND is one of "
                         "vs|virtualservice(s), dr|destinationrule(s), gw|gateways.networking.istio.io, "
                         "se|serviceentry|serviceentries, we|workloadentry|workloadentries; the Gateway API's "
                         "gateway(s)|gtw|gateways.gateway.networking.k8s.io, httproute(s), tcproute(s), tlsroute(s), "
                         "referencegrant(s); svc|service(s). As kubectl does with both APIs installed, gateway(s) "
                         "is the Gateway API's Gateway and gw Istio's.")
    get.add_argument("kind", metavar="KIND[/NAME]")
    get.add_argument("name", nargs="?")
    get.add_argument("-n", "--namespace", default="default")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=("yaml", "json", "wide"))
    get.set_defaults(func=cmd_get)

    explain = sub.add_parser("explain", parents=[common], help="which rule and version a request would get",
                             description="Explain where a request (or, with --port of a TCP listener, a "
                             "connection) would go with the serving config, and why earlier rules did not "
                             "match.")
    explain.add_argument("--authority", "--host", dest="authority", default="",
                         help="the request's host[:port], e.g. reviews:9080")
    explain.add_argument("--path", default="/", help="path and query (default /)")
    explain.add_argument("--method", default="GET")
    explain.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE")
    explain.add_argument("--listener", help="listener name (default: the sidecar HTTP listener)")
    explain.add_argument("--port", type=int, help="pick the listener by port (e.g. a gateway's 31400)")
    explain.add_argument("--destination-ip", help="for TCP: the address the client connected to")
    explain.add_argument("--sni", help="for TLS passed through: the server name the client sends")
    explain.add_argument("-o", "--output", choices=("text", "json"), default="text")
    explain.set_defaults(func=cmd_explain)

    from proxy.rollout.cli import add_command as add_rollout

    add_rollout(sub, common)


def _run(fn: Any, args: argparse.Namespace) -> int:
    try:
        return int(fn(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# apply / delete --------------------------------------------------------------------------------------


def read_files(names: list[str]) -> list[dict[str, str]]:
    """[{filename, content}] for every -f: a file, every YAML file under a directory, or stdin."""
    files: list[dict[str, str]] = []
    for name in names:
        if name == "-":
            files.append({"filename": "<stdin>", "content": sys.stdin.read()})
            continue
        if not os.path.exists(name):
            raise CliError(f"the path {name!r} does not exist")
        found = list(iter_config_files([name]))
        if os.path.isdir(name) and not found:
            raise CliError(f"no .yaml or .yml files in {name}")
        for path in found:
            try:
                with open(path, encoding="utf-8") as fh:
                    files.append({"filename": path, "content": fh.read()})
            except OSError as exc:
                raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return files


def resource(kind: str) -> str:
    """kubectl's resource name of a kind: `virtualservices.networking.istio.io`, `services`."""
    group = gateway_api.group_of(kind) if gateway_api.is_gateway_api(kind) else OTHER_GROUPS.get(kind, GROUP)
    plural = PLURALS.get(kind, kind.lower())
    return f"{plural}.{group}" if group else plural


def object_ref(obj: dict[str, Any]) -> str:
    kind = str(obj["kind"])
    group = gateway_api.group_of(kind) if gateway_api.is_gateway_api(kind) else OTHER_GROUPS.get(kind, GROUP)
    single = gateway_api.written_kind(kind).lower()
    return f"{single}.{group}/{obj['name']}" if group else f"{single}/{obj['name']}"


def _send_change(args: argparse.Namespace, path: str) -> tuple[int, Any]:
    files = read_files(args.filename)
    body = json.dumps({"files": files}).encode()
    query = [("dry_run", "1")] if args.dry_run else []
    if args.namespace:
        query.append(("namespace", args.namespace))
    return admin_client(args).call("POST", path, query, body)


def _print_rejection(status: int, payload: dict[str, Any], what: str) -> int:
    for warning in payload.get("warnings") or []:
        print(f"Warning: {warning}", file=sys.stderr)
    if status == 422:
        errors = payload.get("errors") or []
        for error in errors:
            print(error, file=sys.stderr)
        print(f"error: {what} rejected: {len(errors)} error(s); nothing changed, still serving config "
              f"version {payload.get('version')}", file=sys.stderr)
        return 1
    message = payload.get("error") or "; ".join(payload.get("errors") or []) or f"HTTP {status}"
    for notice in payload.get("skipped") or []:
        print(notice, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    return 1


def _report_serving(args: argparse.Namespace, payload: dict[str, Any], changed: list[dict[str, Any]]) -> None:
    """The last line of apply/delete: the version now serving, once every listed proxy serves it."""
    if payload.get("dry_run"):
        print(f"dry run: nothing changed; serving config version {payload['version']}")
        return
    wait_for_peers(args, changed)
    print(f"serving config version {payload['version']}")


def cmd_apply(args: argparse.Namespace) -> int:
    return _run(_apply, args)


def _apply(args: argparse.Namespace) -> int:
    status, payload = _send_change(args, "/apply")
    if status != 200:
        return _print_rejection(status, payload, "apply")
    for notice in payload.get("skipped") or []:
        print(notice, file=sys.stderr)
    for warning in payload.get("warnings") or []:
        print(f"Warning: {warning}", file=sys.stderr)
    suffix = " (dry run)" if payload.get("dry_run") else ""
    for obj in payload.get("objects") or []:
        print(f"{object_ref(obj)} {obj['result']}{suffix}")
    _report_serving(args, payload, payload.get("objects") or [])
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    return _run(_delete, args)


def _delete(args: argparse.Namespace) -> int:
    status, payload = _send_change(args, "/delete")
    if status != 200:
        return _print_rejection(status, payload, "delete")
    suffix = " (dry run)" if payload.get("dry_run") else ""
    missing = 0
    for obj in payload.get("objects") or []:
        if obj["result"] == "not found":
            missing += 1
            print(f'Error from server (NotFound): {resource(obj["kind"])} "{obj["name"]}" not found',
                  file=sys.stderr)
        else:
            print(f"{object_ref(obj)} {obj['result']}{suffix}")
    for warning in payload.get("warnings") or []:
        print(f"Warning: {warning}", file=sys.stderr)
    _report_serving(args, payload, [o for o in payload.get("objects") or [] if o["result"] != "not found"])
    return 1 if missing else 0


# get -------------------------------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace) -> int:
    return _run(_get, args)


def _get(args: argparse.Namespace) -> int:
    kind_text, _, name = args.kind.partition("/")
    name = name or args.name or ""
    kind = KIND_NAMES.get(kind_text.lower())
    if kind is None:
        raise CliError(f'the server doesn\'t have a resource type "{kind_text}" (one of: vs, dr, gw, se, we, '
                       'gateway, httproute, tcproute, tlsroute, referencegrant, svc, rollout)')
    query = [("kind", kind)]
    if not args.all_namespaces:
        query.append(("namespace", args.namespace))
    if name:
        query.append(("name", name))
    status, payload = admin_client(args).call("GET", "/objects", query)
    if status != 200:
        raise CliError(payload.get("error") or f"HTTP {status}")
    items = payload.get("objects") or []
    if not items:
        if name:
            print(f'Error from server (NotFound): {resource(kind)} "{name}" not found', file=sys.stderr)
            return 1
        where = "any namespace" if args.all_namespaces else f"{args.namespace} namespace"
        print(f"No resources found in {where}.", file=sys.stderr)
        return 0
    if args.output == "yaml":
        print("---\n".join(yaml.safe_dump(i["object"], sort_keys=False) for i in items), end="")
    elif args.output == "json":
        objects = [i["object"] for i in items]
        single = name and len(objects) == 1
        print(json.dumps(objects[0] if single else {"apiVersion": "v1", "kind": "List", "items": objects},
                         indent=2))
    else:
        print(table(kind, items, wide=args.output == "wide", namespaces=args.all_namespaces), end="")
    return 0


def _list(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if value else ""


def table(kind: str, items: list[dict[str, Any]], wide: bool = False, namespaces: bool = False) -> str:
    """kubectl's columns for the Istio kinds (their CRDs' printer columns), `-o wide` adds where it lives."""
    def row(item: dict[str, Any]) -> list[str]:
        spec = item["object"].get("spec") or {}
        age = human_age(item.get("age_seconds"))
        if kind == "VirtualService":
            cells = [item["name"], _list(spec.get("gateways")), _list(spec.get("hosts")), age]
        elif kind == "DestinationRule":
            cells = [item["name"], str(spec.get("host", "")), age]
        elif kind == "ServiceEntry":
            cells = [item["name"], _list(spec.get("hosts")), str(spec.get("location", "")),
                     str(spec.get("resolution", "")), age]
        elif kind == "WorkloadEntry":
            cells = [item["name"], age, str(spec.get("address", ""))]
        elif kind == "HTTPRoute":
            cells = [item["name"], _list(spec.get("hostnames")), age]
        elif kind == gateway_api.GATEWAY:
            conditions = (item["object"].get("status") or {}).get("conditions") or []
            programmed = next((c["status"] for c in conditions if c.get("type") == "Programmed"), "Unknown")
            cells = [item["name"], str(spec.get("gatewayClassName", "")), programmed, age]
        elif kind == "Rollout":
            subsets = f"{(spec.get('stable') or {}).get('subset', '')}->{(spec.get('canary') or {}).get('subset', '')}"
            cells = [item["name"], str(spec.get("virtualService", "")), subsets, age]
        elif kind == "Service":
            ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
            cells = [item["name"], ports or "<none>", age]
        else:
            cells = [item["name"], age]
        if namespaces:
            cells.insert(0, item["namespace"])
        if wide:
            cells.append(f"{item.get('file')}:{item.get('line')}")
        return cells

    headers = {"VirtualService": ["NAME", "GATEWAYS", "HOSTS", "AGE"],
               "DestinationRule": ["NAME", "HOST", "AGE"],
               "ServiceEntry": ["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"],
               "WorkloadEntry": ["NAME", "AGE", "ADDRESS"], "HTTPRoute": ["NAME", "HOSTNAMES", "AGE"],
               gateway_api.GATEWAY: ["NAME", "CLASS", "PROGRAMMED", "AGE"],
               "Service": ["NAME", "PORT(S)", "AGE"],
               "Rollout": ["NAME", "VIRTUALSERVICE", "STABLE->CANARY", "AGE"]}.get(kind, ["NAME", "AGE"])
    header = (["NAMESPACE"] if namespaces else []) + headers + (["SOURCE"] if wide else [])
    rows = [header] + [row(i) for i in items]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["   ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def human_age(seconds: float | None) -> str:
    """kubectl's short age: 45s, 3m20s, 12m, 5h2m, 3d4h, 120d."""
    if seconds is None:
        return "<unknown>"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


# explain ---------------------------------------------------------------------------------------------


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
