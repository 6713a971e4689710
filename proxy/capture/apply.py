"""`shiftproxy iptables`: install or remove the capture rules with iptables or nft, whichever exists.

IPv4 is required; IPv6 rules are installed too when the kernel has IPv6 and the tool for it exists,
and skipped with a notice otherwise. Installing first removes any earlier rules of ours, so running it
twice (an init container restarted) leaves one copy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Literal

from proxy.capture import rules
from proxy.capture.rules import CapturePlan, Family

Backend = Literal["iptables", "nft"]
CAP_NET_ADMIN = 12


class CaptureError(Exception):
    """A problem the user must fix (missing tool or privilege, a rule the kernel refused)."""


def add_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("iptables", help="redirect this network namespace's TCP to the sidecar (init step)",
                       description="Install the rules that send outbound TCP to the sidecar's outbound "
                                   "listener (and, optionally, inbound TCP to its inbound listener).")
    p.add_argument("--proxy-port", type=int, default=15001, metavar="PORT",
                   help="outbound capture port: the sidecar's outbound listener (default 15001)")
    p.add_argument("--inbound-capture-port", type=int, default=15006, metavar="PORT",
                   help="inbound capture port (default 15006)")
    p.add_argument("--proxy-uid", type=int, default=1337, metavar="UID",
                   help="uid the proxy runs as; its traffic is never captured (default 1337)")
    p.add_argument("--proxy-gid", type=int, default=None, metavar="GID",
                   help="also skip traffic of this group id (default: not used)")
    p.add_argument("--exclude-ports", default="", metavar="P1,P2",
                   help="outbound destination ports never captured (and never inbound with --inbound-ports '*')")
    p.add_argument("--exclude-cidrs", default="", metavar="CIDR,...", help="destinations never captured")
    p.add_argument("--include-cidrs", default="*", metavar="CIDR,...",
                   help="capture only these destinations (default '*': all)")
    p.add_argument("--inbound-ports", default="", metavar="P1,P2|*",
                   help="inbound ports redirected to the inbound capture port (default none)")
    p.add_argument("--backend", choices=("auto", "iptables", "nft"), default="auto",
                   help="rule tool (default auto: iptables if installed, else nft)")
    p.add_argument("--ipv6", choices=("auto", "on", "off"), default="auto",
                   help="IPv6 rules: auto (when the kernel and tool allow), on (required), off")
    p.add_argument("--dry-run", action="store_true", help="print the rules instead of installing them")
    p.add_argument("--cleanup", action="store_true", help="remove the rules installed earlier")
    p.set_defaults(func=cmd_iptables)


def cmd_iptables(args: argparse.Namespace) -> int:
    try:
        capture = rules.plan(outbound_port=args.proxy_port, inbound_port=args.inbound_capture_port,
                             proxy_uid=args.proxy_uid, proxy_gid=args.proxy_gid, exclude_ports=args.exclude_ports,
                             exclude_cidrs=args.exclude_cidrs, include_cidrs=args.include_cidrs,
                             inbound_ports=args.inbound_ports)
    except ValueError as exc:
        print(f"shiftproxy iptables: {exc}", file=sys.stderr)
        return 2
    backend = choose_backend(args.backend, shutil.which)
    families: list[Family] = [4] if args.ipv6 == "off" else [4, 6]
    if args.dry_run:
        shown: Backend = args.backend if args.backend != "auto" else backend or "iptables"
        print(render(capture, shown, families, args.cleanup), end="")
        return 0
    try:
        if backend is None:
            raise CaptureError("neither iptables nor nft is installed (Debian/Ubuntu: apt-get install iptables)")
        check_privileges()
        done = install(capture, backend, families, args.ipv6 == "on", cleanup_only=args.cleanup)
    except CaptureError as exc:
        print(f"shiftproxy iptables: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    return 0


def choose_backend(wanted: str, which: Callable[[str], str | None]) -> Backend | None:
    if wanted in ("iptables", "nft"):
        return wanted if which(wanted) else None  # type: ignore[return-value]
    if which("iptables"):
        return "iptables"
    return "nft" if which("nft") else None


def render(capture: CapturePlan, backend: Backend, families: list[Family], cleanup: bool = False) -> str:
    """What `install` would run, as shell text (for --dry-run)."""
    out: list[str] = []
    for family in families:
        if backend == "nft":
            if cleanup:
                out.append(shlex.join(rules.nft_cleanup(family)))
            elif script := rules.nft_script(capture, family):
                out.append(f"nft -f - <<'EOF'\n{script}EOF")
        else:
            cmds = rules.iptables_cleanup(family) if cleanup else rules.iptables_commands(capture, family)
            out += [shlex.join(c) for c in cmds]
    return "\n".join(out) + "\n"


def check_privileges() -> None:
    """Changing netfilter rules needs CAP_NET_ADMIN in this network namespace: say so up front."""
    try:
        with open("/proc/self/status") as f:
            caps = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), None)
    except OSError:
        return  # no /proc: let the tool itself report
    if caps is not None and not caps >> CAP_NET_ADMIN & 1:
        raise CaptureError("changing netfilter rules needs CAP_NET_ADMIN: run as root, or add the NET_ADMIN "
                           "capability (Kubernetes: securityContext.capabilities.add: [NET_ADMIN])")


def ipv6_available() -> bool:
    return os.path.exists("/proc/net/if_inet6")


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise CaptureError(f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CaptureError(f"{shlex.join(cmd)} did not finish in 30 s") from None


def install(capture: CapturePlan, backend: Backend, families: list[Family], require_ipv6: bool = False,
            cleanup_only: bool = False) -> list[str]:
    """Remove our earlier rules, then (unless `cleanup_only`) install `capture`. Returns what was done."""
    done = []
    for family in families:
        if family == 6:
            tool = "nft" if backend == "nft" else "ip6tables"
            reason = ("the kernel has no IPv6" if not ipv6_available()
                      else f"{tool} is not installed" if not shutil.which(tool) else "")
            if reason:
                if require_ipv6:
                    raise CaptureError(f"IPv6 rules requested but {reason}")
                done.append(f"IPv6: skipped ({reason})")
                continue
        try:
            done.append(_install_family(capture, backend, family, cleanup_only))
        except CaptureError:
            if family == 6 and not require_ipv6 and not cleanup_only:
                _remove(backend, 6)
                done.append("IPv6: skipped (the kernel refused the rules; IPv4 is captured)")
                continue
            raise
    return done


def _remove(backend: Backend, family: Family) -> None:
    if backend == "nft":
        _run(rules.nft_cleanup(family))
    else:
        for cmd in rules.iptables_cleanup(family):
            _run(cmd)  # fails for what is already gone: fine


def _install_family(capture: CapturePlan, backend: Backend, family: Family, cleanup_only: bool) -> str:
    name = f"IPv{family}"
    _remove(backend, family)
    if cleanup_only:
        return f"{name}: rules removed ({backend})"
    if backend == "nft":
        script = rules.nft_script(capture, family)
        if script:
            _check(_run(["nft", "-f", "-"], script), ["nft", "-f", "-"])
        count = script.count("\n")
    else:
        cmds = rules.iptables_commands(capture, family)
        for cmd in cmds:
            result = _run(cmd)
            if result.returncode != 0:
                _remove(backend, family)  # never leave half the rules installed
                _check(result, cmd)
        count = len(cmds)
    if not count:
        return f"{name}: nothing to capture (no --include-cidrs of this family)"
    return f"{name}: capture installed ({backend}, {count} rules): outbound TCP → :{capture.outbound_port}" + (
        f", inbound → :{capture.inbound_port}" if capture.inbound_ports else "")


def _check(result: subprocess.CompletedProcess[str], cmd: list[str]) -> None:
    if result.returncode == 0:
        return
    message = (result.stderr or result.stdout).strip().splitlines()
    detail = message[-1] if message else f"exit status {result.returncode}"
    if "ermission denied" in detail or "Operation not permitted" in detail:
        detail += " (needs root or CAP_NET_ADMIN)"
    raise CaptureError(f"{shlex.join(cmd)} failed: {detail}")
