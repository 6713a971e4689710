"""The traffic-capture rules of `shiftproxy iptables`, built as data (no I/O, no privileges needed).

The same plan renders as iptables commands (`iptables_commands`) or as one nftables script
(`nft_script`), for IPv4 and IPv6. Outbound TCP is redirected to the sidecar's outbound listener
except: traffic of the proxy's own uid (and gid, when given), so its upstream connections never loop
back into it; traffic to the loopback address itself (127.0.0.1/32, ::1/128), which is where the
proxy's listeners and an application's own local services are; and excluded ports and CIDRs.
Unlike Istio's rules, other loopback-range destinations (127.10.0.1) *are* captured: local service
VIPs may live there. Inbound capture (optional) redirects the given ports arriving from outside to the
inbound listener.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

Family = Literal[4, 6]

OUTPUT_CHAIN = "SHIFTPROXY_OUTPUT"
REDIRECT_CHAIN = "SHIFTPROXY_REDIRECT"
INBOUND_CHAIN = "SHIFTPROXY_INBOUND"
IN_REDIRECT_CHAIN = "SHIFTPROXY_IN_REDIRECT"
NFT_TABLE = "shiftproxy"
LOOPBACK = {4: "127.0.0.1/32", 6: "::1/128"}
# the proxy's own ports, never redirected inbound when every port is captured (`--inbound-ports '*'`)
PROXY_PORTS = (15000, 15001, 15006, 15020, 15021, 15090)


@dataclass(frozen=True, slots=True)
class CapturePlan:
    """What to capture. Built by `plan(...)`, which validates every field."""

    outbound_port: int = 15001
    inbound_port: int = 15006
    proxy_uid: int = 1337
    proxy_gid: int | None = None
    exclude_ports: tuple[int, ...] = ()
    exclude_cidrs: tuple[str, ...] = ()
    include_cidrs: tuple[str, ...] = ("*",)  # "*": every destination
    inbound_ports: tuple[int, ...] | Literal["*"] = ()  # () = no inbound capture

    def cidrs(self, which: tuple[str, ...], family: Family) -> list[str]:
        return [c for c in which if c != "*" and ipaddress.ip_network(c, strict=False).version == family]

    def captures_all(self) -> bool:
        return "*" in self.include_cidrs

    def inbound_skipped(self) -> tuple[int, ...]:
        """Ports never redirected inbound when every port is: the proxy's own and the excluded ones."""
        return tuple(sorted({*PROXY_PORTS, self.outbound_port, self.inbound_port, *self.exclude_ports}))

    def active(self, family: Family) -> bool:
        """False when the include list names only the other family's networks: nothing to do."""
        return self.captures_all() or bool(self.cidrs(self.include_cidrs, family))


def _port(text: str, what: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what}: {text!r} is not a port (1-65535)")
    return int(text)


def _ports(text: str, what: str) -> tuple[int, ...]:
    return tuple(_port(p, what) for p in (s.strip() for s in text.split(",")) if p)


def _cidrs(text: str, what: str, allow_star: bool) -> tuple[str, ...]:
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item == "*" and allow_star:
            out.append(item)
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not an IP address or CIDR") from None
    return tuple(out)


def plan(*, outbound_port: int = 15001, inbound_port: int = 15006, proxy_uid: int = 1337,
         proxy_gid: int | None = None, exclude_ports: str = "", exclude_cidrs: str = "",
         include_cidrs: str = "*", inbound_ports: str = "") -> CapturePlan:
    """A validated plan from command-line text (comma lists). Raises ValueError naming the bad value."""
    for value, what in ((outbound_port, "--outbound-port"), (inbound_port, "--inbound-port")):
        _port(str(value), what)
    for value, what in ((proxy_uid, "--proxy-uid"), (proxy_gid, "--proxy-gid")):  # type: ignore[assignment]
        if value is not None and value < 0:
            raise ValueError(f"{what}: {value} is not a user or group id")
    inbound: tuple[int, ...] | Literal["*"] = "*" if inbound_ports.strip() == "*" else \
        _ports(inbound_ports, "--inbound-ports")
    return CapturePlan(outbound_port, inbound_port, proxy_uid, proxy_gid,
                       _ports(exclude_ports, "--exclude-ports"),
                       _cidrs(exclude_cidrs, "--exclude-cidrs", allow_star=False),
                       _cidrs(include_cidrs, "--include-cidrs", allow_star=True) or ("*",), inbound)


# iptables ---------------------------------------------------------------------------------------


def _tool(family: Family) -> str:
    return "iptables" if family == 4 else "ip6tables"


def iptables_commands(p: CapturePlan, family: Family = 4) -> list[list[str]]:
    """The commands that install the plan (run `iptables_cleanup` first: they are not idempotent)."""
    if not p.active(family):
        return []
    nat = [_tool(family), "-t", "nat"]
    cmds = [
        [*nat, "-N", REDIRECT_CHAIN],
        [*nat, "-A", REDIRECT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(p.outbound_port)],
        [*nat, "-N", OUTPUT_CHAIN],
        [*nat, "-A", OUTPUT_CHAIN, "-m", "owner", "--uid-owner", str(p.proxy_uid), "-j", "RETURN"],
    ]
    if p.proxy_gid is not None:
        cmds.append([*nat, "-A", OUTPUT_CHAIN, "-m", "owner", "--gid-owner", str(p.proxy_gid), "-j", "RETURN"])
    cmds.append([*nat, "-A", OUTPUT_CHAIN, "-d", LOOPBACK[family], "-j", "RETURN"])
    for port in p.exclude_ports:
        cmds.append([*nat, "-A", OUTPUT_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "RETURN"])
    for cidr in p.cidrs(p.exclude_cidrs, family):
        cmds.append([*nat, "-A", OUTPUT_CHAIN, "-d", cidr, "-j", "RETURN"])
    if p.captures_all():
        cmds.append([*nat, "-A", OUTPUT_CHAIN, "-j", REDIRECT_CHAIN])
    else:
        for cidr in p.cidrs(p.include_cidrs, family):
            cmds.append([*nat, "-A", OUTPUT_CHAIN, "-d", cidr, "-j", REDIRECT_CHAIN])
    cmds.append([*nat, "-A", "OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN])
    if p.inbound_ports:
        cmds += [
            [*nat, "-N", IN_REDIRECT_CHAIN],
            [*nat, "-A", IN_REDIRECT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(p.inbound_port)],
            [*nat, "-N", INBOUND_CHAIN],
        ]
        if p.inbound_ports == "*":
            for port in p.inbound_skipped():
                cmds.append([*nat, "-A", INBOUND_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "RETURN"])
            cmds.append([*nat, "-A", INBOUND_CHAIN, "-p", "tcp", "-j", IN_REDIRECT_CHAIN])
        else:
            for port in p.inbound_ports:
                cmds.append([*nat, "-A", INBOUND_CHAIN, "-p", "tcp", "--dport", str(port), "-j", IN_REDIRECT_CHAIN])
        cmds.append([*nat, "-A", "PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN])
    return cmds


def iptables_cleanup(family: Family = 4) -> list[list[str]]:
    """Commands that remove everything `iptables_commands` installs; each may fail when already gone."""
    nat = [_tool(family), "-t", "nat"]
    cmds = [[*nat, "-D", "OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN],
            [*nat, "-D", "PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN]]
    for chain in (OUTPUT_CHAIN, REDIRECT_CHAIN, INBOUND_CHAIN, IN_REDIRECT_CHAIN):
        cmds += [[*nat, "-F", chain], [*nat, "-X", chain]]
    return cmds


# nftables ---------------------------------------------------------------------------------------


def _nft_family(family: Family) -> str:
    return "ip" if family == 4 else "ip6"


def _set(items: list[str] | tuple[int, ...]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def nft_script(p: CapturePlan, family: Family = 4) -> str:
    """One `nft -f` script that replaces the table atomically (created empty, deleted, then defined)."""
    if not p.active(family):
        return ""
    fam = _nft_family(family)
    addr = "ip daddr" if family == 4 else "ip6 daddr"
    out = [f"add table {fam} {NFT_TABLE}", f"delete table {fam} {NFT_TABLE}", f"table {fam} {NFT_TABLE} {{",
           "\tchain output {", "\t\ttype nat hook output priority -100; policy accept;",
           "\t\tmeta l4proto != tcp return", f"\t\tmeta skuid {p.proxy_uid} return"]
    if p.proxy_gid is not None:
        out.append(f"\t\tmeta skgid {p.proxy_gid} return")
    out.append(f"\t\t{addr} {LOOPBACK[family]} return")
    if p.exclude_ports:
        out.append(f"\t\ttcp dport {_set(p.exclude_ports)} return")
    excluded = p.cidrs(p.exclude_cidrs, family)
    if excluded:
        out.append(f"\t\t{addr} {_set(excluded)} return")
    # nft wants the transport protocol matched in the rule that maps the port
    if p.captures_all():
        out.append(f"\t\tmeta l4proto tcp redirect to :{p.outbound_port}")
    else:
        out.append(f"\t\t{addr} {_set(p.cidrs(p.include_cidrs, family))} meta l4proto tcp "
                   f"redirect to :{p.outbound_port}")
    out.append("\t}")
    if p.inbound_ports:
        out += ["\tchain prerouting {", "\t\ttype nat hook prerouting priority -100; policy accept;"]
        if p.inbound_ports == "*":
            out.append(f"\t\ttcp dport {_set(p.inbound_skipped())} return")
            out.append(f"\t\tmeta l4proto tcp redirect to :{p.inbound_port}")
        else:
            out.append(f"\t\ttcp dport {_set(p.inbound_ports)} redirect to :{p.inbound_port}")
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def nft_cleanup(family: Family = 4) -> list[str]:
    return ["nft", "delete", "table", _nft_family(family), NFT_TABLE]
