"""`python -m proxy.samples <app>`: run one sample app (or `all` of them) until SIGTERM/SIGINT.

Each listener prints `<name> listening on HOST:PORT` once it is bound (port 0 picks a free port and
prints it). Outbound calls go through `--proxy` (default: `$HTTP_PROXY`) unless the host is in
`$NO_PROXY`; like Bookinfo, service addresses also default from `DETAILS_HOSTNAME`,
`DETAILS_SERVICE_PORT`, `REVIEWS_*`, `RATINGS_*` and `SERVICES_DOMAIN`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from proxy.samples.details import start_details
from proxy.samples.http import parse_proxy_url
from proxy.samples.productpage import start_productpage
from proxy.samples.ratings import VERSIONS as RATINGS_VERSIONS
from proxy.samples.ratings import start_ratings
from proxy.samples.reviews import VERSIONS as REVIEWS_VERSIONS
from proxy.samples.reviews import start_reviews
from proxy.samples.server import SampleServer
from proxy.samples.tcp_echo import start_tcp_echo

# The local port plan of `all`, the same one config/bookinfo and config/tcp-echo point at.
PLAN = {
    "productpage": 9080,
    "details": 9081,
    "reviews-v1": 9091,
    "reviews-v2": 9092,
    "reviews-v3": 9093,
    "ratings": 9095,
    "tcp-echo-one": (19001, 19101),  # service ports 9000 (tcp) and 9001 (tcp-other)
    "tcp-echo-two": (19002, 19102),
}

Starter = Callable[[], Awaitable[SampleServer]]


def service_address(name: str) -> str:
    """Bookinfo's `<NAME>_HOSTNAME[.SERVICES_DOMAIN]:<NAME>_SERVICE_PORT`, default `<name>:9080`."""
    upper = name.upper()
    host = os.environ.get(f"{upper}_HOSTNAME") or name
    domain = os.environ.get("SERVICES_DOMAIN")
    if domain:
        host = f"{host}.{domain}"
    return f"{host}:{os.environ.get(f'{upper}_SERVICE_PORT') or 9080}"


def parse_ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated port list: {text!r}") from None
    if not ports or any(not 0 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"ports must be 0..65535: {text!r}")
    return ports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m proxy.samples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    apps = parser.add_subparsers(dest="app", required=True)

    def app(name: str, help_text: str, port: int | None = 9080) -> argparse.ArgumentParser:
        sub = apps.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        if port is not None:
            sub.add_argument("--port", type=int, default=port, help=f"port to listen on (default {port})")
        return sub

    def proxy_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--proxy", default=os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy"),
                         help="HTTP proxy for outbound calls, e.g. http://127.0.0.1:15001 "
                              "(default $HTTP_PROXY; '' for none)")

    sub = app("productpage", "Bookinfo productpage: calls details and reviews, renders the page")
    sub.add_argument("--details", default=service_address("details"), help="details HOST:PORT")
    sub.add_argument("--reviews", default=service_address("reviews"), help="reviews HOST:PORT")
    sub.add_argument("--ratings", default=service_address("ratings"), help="ratings HOST:PORT (API only)")
    proxy_option(sub)

    app("details", "Bookinfo details v1")

    sub = app("reviews", "Bookinfo reviews: v1 (no stars), v2 (black stars), v3 (red stars)")
    sub.add_argument("--version", choices=sorted(REVIEWS_VERSIONS), default="v1")
    sub.add_argument("--ratings", default=service_address("ratings"), help="ratings HOST:PORT")
    sub.add_argument("--podname", default=os.environ.get("HOSTNAME"),
                     help="shown as `Reviews served by:` (default $HOSTNAME, else reviews-VERSION)")
    sub.add_argument("--cluster-name", default=os.environ.get("CLUSTER_NAME") or "null")
    proxy_option(sub)

    sub = app("ratings", "Bookinfo ratings: v1, or the fault builds v-faulty / v-delayed")
    sub.add_argument("--version", choices=RATINGS_VERSIONS, default="v1")

    sub = app("tcp-echo", "tcp-echo: answers each line with '<prefix> <line>'", port=None)
    sub.add_argument("port_list", nargs="?", type=parse_ports, metavar="PORTS", help="like the Go sample")
    sub.add_argument("prefix_arg", nargs="?", metavar="PREFIX")
    sub.add_argument("--ports", type=parse_ports, default=None, help="comma-separated (default 9000)")
    sub.add_argument("--prefix", default=None, help="reply prefix (default hello)")

    sub = app("all", "every app on the local port plan of config/bookinfo and config/tcp-echo", port=None)
    proxy_option(sub)
    return parser


def starters(args: argparse.Namespace) -> list[Starter]:
    proxy = parse_proxy_url(getattr(args, "proxy", None))
    no_proxy = tuple(e for e in (os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "").split(",") if e)
    host = args.host
    if args.app == "productpage":
        return [lambda: start_productpage(host, args.port, details=args.details, reviews=args.reviews,
                                          ratings=args.ratings, proxy=proxy, no_proxy=no_proxy)]
    if args.app == "details":
        return [lambda: start_details(host, args.port)]
    if args.app == "reviews":
        return [lambda: start_reviews(args.version, host, args.port, podname=args.podname,
                                      clustername=args.cluster_name, ratings=args.ratings, proxy=proxy,
                                      no_proxy=no_proxy)]
    if args.app == "ratings":
        return [lambda: start_ratings(host, args.port, version=args.version)]
    if args.app == "tcp-echo":
        ports = args.ports or args.port_list or [9000]
        prefix = args.prefix or args.prefix_arg or "hello"
        return [lambda: start_tcp_echo(ports, prefix, host)]
    # all: through the proxy, services by name (the proxy picks the version); without one, fixed ports
    if proxy is not None:
        details, reviews, ratings = "details:9080", "reviews:9080", "ratings:9080"
    else:
        details, reviews, ratings = (f"127.0.0.1:{PLAN[name]}" for name in ("details", "reviews-v1", "ratings"))
    out: list[Starter] = [
        lambda: start_productpage(host, PLAN["productpage"], details=details, reviews=reviews, ratings=ratings,
                                  proxy=proxy, no_proxy=no_proxy),
        lambda: start_details(host, PLAN["details"]),
        lambda: start_ratings(host, PLAN["ratings"]),
    ]
    for version in ("v1", "v2", "v3"):
        out.append(lambda v=version: start_reviews(v, host, PLAN[f"reviews-{v}"], ratings=ratings, proxy=proxy,
                                                   no_proxy=no_proxy))
    for prefix in ("one", "two"):
        out.append(lambda p=prefix: start_tcp_echo(PLAN[f"tcp-echo-{p}"], p, host))
    return out


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(start: list[Starter]) -> int:
    servers: list[SampleServer] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before binding, so a stop during start-up is clean too
        loop.add_signal_handler(sig, stop.set)
    try:
        for starter in start:
            server = await starter()
            servers.append(server)
            for host, port in server.addresses:
                print(f"{server.name} listening on {_show(host, port)}{server.note}", flush=True)
        await stop.wait()
        return 0
    except OSError as exc:
        print(f"samples: cannot listen: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        start = starters(args)
    except ValueError as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a project dependency
        return asyncio.run(serve(start))
    return uvloop.run(serve(start))


if __name__ == "__main__":
    sys.exit(main())
