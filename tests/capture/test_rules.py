"""The capture rules as data: what `shiftproxy iptables` installs, for iptables and nft, v4 and v6."""

from __future__ import annotations

import pytest

from proxy.capture import rules
from proxy.capture.apply import choose_backend, render
from proxy.cli import main
from tests.paths import ROOT


def lines(cmds: list[list[str]]) -> list[str]:
    return [" ".join(c) for c in cmds]


def test_default_plan_redirects_all_outbound_tcp_except_the_proxy_uid_and_127_0_0_1() -> None:
    assert lines(rules.iptables_commands(rules.plan())) == [
        "iptables -t nat -N SHIFTPROXY_REDIRECT",
        "iptables -t nat -A SHIFTPROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "iptables -t nat -N SHIFTPROXY_OUTPUT",
        "iptables -t nat -A SHIFTPROXY_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "iptables -t nat -A SHIFTPROXY_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "iptables -t nat -A SHIFTPROXY_OUTPUT -j SHIFTPROXY_REDIRECT",
        "iptables -t nat -A OUTPUT -p tcp -j SHIFTPROXY_OUTPUT",
    ]


def test_other_loopback_addresses_are_captured_unlike_istio() -> None:
    """Only 127.0.0.1/32 is skipped: VIPs elsewhere in 127.0.0.0/8 must reach the proxy, and no rule
    lets `-o lo` traffic through."""
    text = "\n".join(lines(rules.iptables_commands(rules.plan())))
    assert "127.0.0.0/8" not in text and "-o lo" not in text


def test_exclusions_come_before_the_redirect_in_order() -> None:
    cmds = lines(rules.iptables_commands(rules.plan(exclude_ports="22, 8080", exclude_cidrs="10.0.0.0/8,fd00::/8",
                                                    proxy_gid=1337)))
    redirect = cmds.index("iptables -t nat -A SHIFTPROXY_OUTPUT -j SHIFTPROXY_REDIRECT")
    for rule in ("-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN",
                 "-p tcp --dport 22 -j RETURN", "-p tcp --dport 8080 -j RETURN", "-d 10.0.0.0/8 -j RETURN"):
        assert cmds.index(f"iptables -t nat -A SHIFTPROXY_OUTPUT {rule}") < redirect, rule
    assert not any("fd00" in c for c in cmds)  # an IPv6 network is not an iptables (v4) rule


@pytest.mark.parametrize(("include", "family", "expected"), [
    ("127.10.0.0/16", 4, ["-d 127.10.0.0/16 -j SHIFTPROXY_REDIRECT"]),
    ("127.10.0.0/16,fd00::/64", 6, ["-d fd00::/64 -j SHIFTPROXY_REDIRECT"]),
    ("10.1.2.3", 4, ["-d 10.1.2.3/32 -j SHIFTPROXY_REDIRECT"]),
])
def test_include_cidrs_redirect_only_those(include: str, family: rules.Family, expected: list[str]) -> None:
    cmds = lines(rules.iptables_commands(rules.plan(include_cidrs=include), family))
    tool = "iptables" if family == 4 else "ip6tables"
    redirects = [c.split("SHIFTPROXY_OUTPUT ", 1)[1] for c in cmds if c.endswith("-j SHIFTPROXY_REDIRECT")]
    assert redirects == expected
    assert all(c.startswith(f"{tool} -t nat ") for c in cmds)


def test_include_cidrs_of_the_other_family_only_install_nothing_for_this_one() -> None:
    p = rules.plan(include_cidrs="127.10.0.0/16")
    assert rules.iptables_commands(p, 6) == [] and rules.nft_script(p, 6) == ""


def test_ipv6_skips_its_own_loopback() -> None:
    assert "ip6tables -t nat -A SHIFTPROXY_OUTPUT -d ::1/128 -j RETURN" in lines(
        rules.iptables_commands(rules.plan(), 6))


def test_inbound_ports_go_to_15006() -> None:
    cmds = lines(rules.iptables_commands(rules.plan(inbound_ports="9080,9443")))
    assert "iptables -t nat -A SHIFTPROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in cmds
    assert "iptables -t nat -A SHIFTPROXY_INBOUND -p tcp --dport 9080 -j SHIFTPROXY_IN_REDIRECT" in cmds
    assert "iptables -t nat -A SHIFTPROXY_INBOUND -p tcp --dport 9443 -j SHIFTPROXY_IN_REDIRECT" in cmds
    assert cmds[-1] == "iptables -t nat -A PREROUTING -p tcp -j SHIFTPROXY_INBOUND"


def test_every_inbound_port_skips_the_proxys_own_ports() -> None:
    cmds = lines(rules.iptables_commands(rules.plan(inbound_ports="*", exclude_ports="22", outbound_port=16001)))
    for port in (15000, 15006, 16001, 22):
        assert f"iptables -t nat -A SHIFTPROXY_INBOUND -p tcp --dport {port} -j RETURN" in cmds
    assert "iptables -t nat -A SHIFTPROXY_INBOUND -p tcp -j SHIFTPROXY_IN_REDIRECT" in cmds


def test_no_inbound_ports_no_inbound_chain() -> None:
    assert not any("INBOUND" in c or "PREROUTING" in c for c in lines(rules.iptables_commands(rules.plan())))


def test_cleanup_removes_every_chain_and_jump_installed() -> None:
    cmds = lines(rules.iptables_commands(rules.plan(inbound_ports="9080")))
    created = {c.split()[-1] for c in cmds if " -N " in c}
    jumps = {c.replace(" -A ", " -D ") for c in cmds if " -A OUTPUT " in c or " -A PREROUTING " in c}
    cleanup = set(lines(rules.iptables_cleanup()))
    assert {f"iptables -t nat -X {chain}" for chain in created} <= cleanup
    assert jumps <= cleanup


def test_nft_script_replaces_its_table_atomically() -> None:
    script = rules.nft_script(rules.plan(exclude_ports="22,8080", exclude_cidrs="10.0.0.0/8",
                                         include_cidrs="127.10.0.0/16", inbound_ports="9080"))
    assert script.splitlines()[:3] == ["add table ip shiftproxy", "delete table ip shiftproxy",
                                       "table ip shiftproxy {"]
    body = [s.strip() for s in script.splitlines()]
    order = ["meta skuid 1337 return", "ip daddr 127.0.0.1/32 return", "tcp dport { 22, 8080 } return",
             "ip daddr { 10.0.0.0/8 } return",
             "ip daddr { 127.10.0.0/16 } meta l4proto tcp redirect to :15001"]
    assert [body.index(r) for r in order] == sorted(body.index(r) for r in order)
    assert "tcp dport { 9080 } redirect to :15006" in body
    assert rules.nft_cleanup(6) == ["nft", "delete", "table", "ip6", "shiftproxy"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"exclude_ports": "22,http"}, "--exclude-ports: 'http' is not a port"),
    ({"exclude_ports": "70000"}, "--exclude-ports: '70000' is not a port"),
    ({"exclude_cidrs": "10.0.0.0/33"}, "--exclude-cidrs: '10.0.0.0/33' is not an IP address or CIDR"),
    ({"exclude_cidrs": "*"}, "--exclude-cidrs: '*' is not an IP address or CIDR"),
    ({"inbound_ports": "0"}, "--inbound-ports: '0' is not a port"),
    ({"proxy_uid": -1}, "--proxy-uid: -1 is not a user or group id"),
    ({"outbound_port": 0}, "--outbound-port: '0' is not a port"),
])
def test_bad_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        rules.plan(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_backend_is_iptables_when_installed_else_nft() -> None:
    assert choose_backend("auto", lambda t: "/x" if t in ("iptables", "nft") else None) == "iptables"
    assert choose_backend("auto", lambda t: "/x" if t == "nft" else None) == "nft"
    assert choose_backend("auto", lambda t: None) is None
    assert choose_backend("nft", lambda t: "/x" if t == "iptables" else None) is None


def test_render_shows_both_families_and_the_cleanup() -> None:
    text = render(rules.plan(), "iptables", [4, 6])
    assert "iptables -t nat -A OUTPUT -p tcp -j SHIFTPROXY_OUTPUT" in text
    assert "ip6tables -t nat -A OUTPUT -p tcp -j SHIFTPROXY_OUTPUT" in text
    assert render(rules.plan(), "nft", [4], cleanup=True) == "nft delete table ip shiftproxy\n"


def test_cli_dry_run_prints_and_needs_no_privilege(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "--dry-run", "--backend", "iptables", "--ipv6", "off", "--proxy-uid", "2000",
                 "--exclude-ports", "15020"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "iptables -t nat -A SHIFTPROXY_OUTPUT -m owner --uid-owner 2000 -j RETURN" in out
    assert "iptables -t nat -A SHIFTPROXY_OUTPUT -p tcp --dport 15020 -j RETURN" in out
    assert not any(line.startswith("ip6tables") for line in out)


def test_cli_bad_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "--dry-run", "--include-cidrs", "nowhere"]) == 2
    assert "--include-cidrs: 'nowhere' is not an IP address or CIDR" in capsys.readouterr().err


def test_the_readme_shows_what_dry_run_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ shiftproxy iptables --dry-run --ipv6 off\n", 1)[1].split("```", 1)[0]
    assert block == render(rules.plan(), "iptables", [4])


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "gateway", "--capture"], "--capture needs the mesh role"),
    (["--inbound-capture-port", "15006"], "--inbound-capture-port needs --capture"),
    (["--capture", "--inbound-capture-port", "70000"], "--inbound-capture-port needs --capture and a port"),
])
def test_run_capture_flags_are_checked(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", "/nonexistent", *args]) == 2
    assert message in capsys.readouterr().err
