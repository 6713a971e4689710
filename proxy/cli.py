"""`shiftproxy` command line: run | validate (and the kubectl-like commands from proxy.cli_ops)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter

from proxy import __version__
from proxy.config import compile_shift
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.compile_tls import TlsOptions
from proxy.config.load import DEFAULT_MAX_BYTES, load_paths
from proxy.routing import path_normalization


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"labels must be k=v[,k=v...], got {item!r}")
        labels[key] = value
    return labels


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"address must be HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def parse_size(text: str) -> int:
    units = {"": 1, "k": 1000, "ki": 1024, "m": 1000**2, "mi": 1024**2, "g": 1000**3, "gi": 1024**3}
    number = text.strip().rstrip("bB")
    suffix = ""
    while number and number[-1].isalpha():
        suffix = number[-1].lower() + suffix
        number = number[:-1]
    if not number.isdigit() or suffix not in units or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"size must be a positive number of bytes, e.g. 8388608 or 8Mi; got {text!r}")
    return int(number) * units[suffix]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftproxy", description="Istio traffic shifting without a mesh.")
    parser.add_argument("--version", action="version", version=f"shiftproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the proxy on Istio YAML config")
    run.add_argument("-c", "--config", action="append", required=True, metavar="PATH",
                     help="file or directory of Istio YAML (repeatable); watched for changes")
    run.add_argument("--labels", type=parse_labels, default={"istio": "ingressgateway"},
                     help="this proxy's labels, matched by Gateway selectors and by VirtualService match "
                          "sourceLabels (default istio=ingressgateway)")
    run.add_argument("--namespace", default="default",
                     help="this proxy's namespace, matched by VirtualService match sourceNamespace (default default)")
    run.add_argument("--role", default="gateway,mesh",
                     help="comma list of roles: gateway (Gateway listeners), mesh (sidecar outbound listeners)")
    run.add_argument("--bind", default="0.0.0.0", help="address of gateway listeners (default 0.0.0.0)")
    run.add_argument("--mesh-bind", default="127.0.0.1", help="address of sidecar listeners (default 127.0.0.1)")
    run.add_argument("--mesh-port", type=int, default=15001, help="sidecar outbound HTTP port (default 15001)")
    run.add_argument("--mesh-tcp-port-offset", type=int, default=0,
                     help="sidecar TCP listener port = service port + this offset (default 0)")
    run.add_argument("--capture", action="store_true",
                     help="route connections redirected to the outbound listener (`shiftproxy iptables`) by their "
                          "original destination")
    run.add_argument("--outbound-traffic-policy", choices=("ALLOW_ANY", "REGISTRY_ONLY"), default="ALLOW_ANY",
                     help="with --capture, a destination in no service: relayed to it (ALLOW_ANY, default) or "
                          "refused (REGISTRY_ONLY)")
    run.add_argument("--inbound-capture-port", type=int, default=0, metavar="PORT",
                     help="with --capture, accept connections redirected inbound (`shiftproxy iptables "
                          "--inbound-ports`) on this port of --bind and relay them to their original destination "
                          "(usually 15006; default 0: none)")
    run.add_argument("--credentials-dir", default="", metavar="DIR",
                     help="where Gateway and DestinationRule credentialName NAME is read: DIR/NAME/{tls.crt,tls.key,"
                          "ca.crt}, as a mounted Kubernetes TLS secret")
    run.add_argument("--mesh-certs", default="", metavar="DIR",
                     help="this proxy's mesh identity for DestinationRule ISTIO_MUTUAL: DIR/{cert-chain.pem,key.pem,"
                          "root-cert.pem}")
    run.add_argument("--admin", type=parse_address, default=("127.0.0.1", 15000), metavar="HOST:PORT",
                     help="admin server address (default 127.0.0.1:15000)")
    run.add_argument("--access-log", choices=("text", "json", "off"), default="text")
    run.add_argument("--drain-timeout", type=float, default=15.0, metavar="SECONDS",
                     help="on SIGTERM, how long in-flight requests may take to finish (default 15)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="processes sharing the listeners through SO_REUSEPORT (default 1); admin served once")
    run.add_argument("--no-watch", action="store_true", help="do not watch config files (SIGHUP still reloads)")
    run.add_argument("--state-dir", metavar="DIR",
                     help="writable directory for objects changed by apply/delete, kept across restarts; the "
                     "config paths are never written (default $SHIFTPROXY_STATE_DIR, else "
                     "$XDG_STATE_HOME/shiftproxy/<digest of the config paths>, XDG_STATE_HOME defaulting to "
                     "~/.local/state)")
    run.add_argument("--max-config-bytes", type=parse_size, default=DEFAULT_MAX_BYTES, metavar="BYTES",
                     help="largest config file read; a bigger one is a config error (default 8Mi; suffixes "
                     "Ki, Mi, Gi)")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--path-normalization", choices=path_normalization.CHOICES, default="base",
                     help="request path normalization before routing, as Istio's meshConfig.pathNormalization "
                          "(default base: RFC 3986, as Envoy's normalize_path)")
    run.add_argument("--preserve-external-request-id", action="store_true",
                     help="keep a client's x-request-id on gateway listeners (default: replaced, as Envoy does "
                          "for external requests)")

    validate = sub.add_parser("validate", help="check Istio YAML without running it")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("-o", "--output", choices=("text", "json"), default="text")
    validate.add_argument("--labels", type=parse_labels, default={"istio": "ingressgateway"})
    validate.add_argument("--namespace", default="default")

    from proxy import cli_ops, demo
    from proxy.capture import apply as capture_apply

    cli_ops.add_commands(sub)
    capture_apply.add_command(sub)
    demo.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command == "run":
        if args.workers > 1:
            from proxy.workers import supervise

            return supervise(_without_workers(sys.argv[1:] if argv is None else argv), args.workers)
        return cmd_run(args)
    if args.command == "validate":
        return cmd_validate(args)
    return int(args.func(args))


def _without_workers(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from proxy.server import RunOptions, run

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    roles = {r.strip() for r in args.role.split(",") if r.strip()}
    if not roles or roles - {"gateway", "mesh"}:
        print("shiftproxy: --role must be gateway, mesh or gateway,mesh", file=sys.stderr)
        return 2
    if args.capture and "mesh" not in roles:
        print("shiftproxy: --capture needs the mesh role (the sidecar's outbound listener)", file=sys.stderr)
        return 2
    if args.inbound_capture_port and not (args.capture and 0 < args.inbound_capture_port <= 65535):
        print("shiftproxy: --inbound-capture-port needs --capture and a port (1-65535)", file=sys.stderr)
        return 2
    options = RunOptions(
        config_paths=args.config,
        compile=CompileOptions(gateway_labels=args.labels, gateway="gateway" in roles, mesh="mesh" in roles,
                               bind=args.bind, mesh_bind=args.mesh_bind, mesh_port=args.mesh_port,
                               mesh_tcp_port_offset=args.mesh_tcp_port_offset, capture=args.capture,
                               namespace=args.namespace,
                               outbound_traffic_policy=args.outbound_traffic_policy,
                               inbound_capture_port=args.inbound_capture_port,
                               tls=TlsOptions(os.path.abspath(args.credentials_dir) if args.credentials_dir else "",
                                              os.path.abspath(args.mesh_certs) if args.mesh_certs else "")),
        admin_host=args.admin[0], admin_port=args.admin[1], access_log=args.access_log,
        drain_timeout=args.drain_timeout, watch=not args.no_watch, state_dir=args.state_dir or "",
        max_config_bytes=args.max_config_bytes,
        path_normalization=path_normalization.PathNormalization(args.path_normalization),
        preserve_external_request_id=args.preserve_external_request_id,
    )
    return run(options)


def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 valid (summary + warnings), 1 invalid (errors on stderr, one a line), 2 usage."""
    from proxy.config.validate import validate

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"shiftproxy validate: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    loaded = load_paths(args.paths)
    errors, warnings = validate(loaded.objects) if loaded.objects else ([], [])
    errors = loaded.errors + errors
    kinds = Counter(o.kind for o in loaded.objects)
    empty: list[str] = []  # destinations with no endpoints, known once compiled
    if not errors:
        # must not raise when valid
        snapshot = compile_snapshot(loaded.objects, CompileOptions(gateway_labels=args.labels,
                                                                   namespace=args.namespace,
                                                                   tls=TlsOptions(load_files=False)))
        empty = [n for n in snapshot.notices if compile_shift.is_empty_warning(n)]
    if args.output == "json":
        print(json.dumps({
            "valid": not errors, "objects": dict(kinds), "files": loaded.files,
            "errors": [e.as_dict() for e in errors],
            "warnings": [w.as_dict() for w in warnings] + [{"reason": n, "severity": "warning"} for n in empty],
            "skipped": loaded.notices,
        }, indent=2))
        return 1 if errors else 0
    for notice in loaded.notices:
        print(notice, file=sys.stderr)
    if errors:
        for e in errors:
            print(str(e), file=sys.stderr)
        print(f"invalid: {len(errors)} error(s), {len(warnings)} warning(s)", file=sys.stderr)
        return 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no Istio objects"
    print(f"valid: {summary}; {len(warnings) + len(empty)} warning(s)")
    for w in warnings:
        print(f"warning: {w}")
    for n in empty:
        print(f"warning: {n}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
