"""kubectl-like commands that talk to a running proxy's admin API: apply, delete, get, explain.

They are thin clients (stdlib urllib, proxy.cli_client): the proxy does the validating, persisting and
swapping, and answers only when the change is serving, so `apply` printing `serving config version N`
means it is live. `explain` is proxy.cli_explain.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml

from proxy.cli_client import ADMIN_ENV, DEFAULT_ADMIN, CliError, _run, admin_client, wait_for_peers
from proxy.cli_explain import cmd_explain
from proxy.config.load import iter_config_files
from proxy.gatewayapi import kinds as gateway_api
from proxy.rollout.cli import add_command as add_rollout

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

    add_rollout(sub, common)


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


