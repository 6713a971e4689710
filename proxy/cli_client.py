"""The admin-API client of the kubectl-like commands (proxy.cli_ops): the admin address, HTTP calls, and
waiting for the other proxies listed to serve a change.

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

DEFAULT_ADMIN = "127.0.0.1:15000"
ADMIN_ENV = "SHIFTPROXY_ADMIN"


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


def _run(fn: Any, args: argparse.Namespace) -> int:
    try:
        return int(fn(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
