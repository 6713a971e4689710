"""Transparent capture end to end, in a network namespace of the test's own (`unshare -n`).

An application with no proxy settings dials service VIPs in 127.10.0.0/16; `shiftproxy iptables`
redirects it to the sidecar (uid 1337), which routes by original destination through the seed's HTTP
steps (all-v1 → 50/50 v1/v3 → v3) and TCP steps (all-v1 → 80/20). Needs root, `unshare` and iptables:
as root, iptables is installed from apt when missing; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import ensure_iptables
from tests.paths import ROOT
from tests.stats import binomial_interval


@cache
def scenario(tmp: str) -> dict[str, Any]:
    """Run the whole scenario once (about ten seconds) and share what it observed between the tests."""
    reason = ensure_iptables()
    if reason:
        pytest.skip(reason)
    result_path = Path(tmp) / "capture-result.json"
    run = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.e2e.capture_scenario", str(result_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result_path.exists(), f"scenario failed to report:\n{run.stdout}\n{run.stderr}"
    result: dict[str, Any] = json.loads(result_path.read_text())
    assert "error" not in result, f"{result['error']}\nproxy log:\n{result['proxy_log']}"
    return result


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scenario(str(tmp_path_factory.mktemp("capture")))


def steps(observed: dict[str, Any]) -> dict[str, dict[str, int]]:
    return observed["steps"]  # type: ignore[no-any-return]


def test_rules_installed_for_both_families(observed: dict[str, Any]) -> None:
    assert "IPv4: capture installed" in observed["iptables"]


def test_http_to_a_vip_follows_the_seed_http_task(observed: dict[str, Any]) -> None:
    s = steps(observed)
    assert s["vip-http-all-v1"] == {"v1": 200}
    half = s["vip-http-50-v3"]
    assert set(half) == {"v1", "v3"} and sum(half.values()) == 1000
    lo, hi = binomial_interval(1000, 0.5)
    assert lo <= half["v3"] <= hi, (half, (lo, hi))
    assert s["vip-http-v3"] == {"v3": 200}


def test_an_unlisted_address_is_routed_by_a_known_host(observed: dict[str, Any]) -> None:
    assert steps(observed)["unlisted-ip-host-reviews"] == {"v3": 20}


def test_ipv6_vip_is_captured_too(observed: dict[str, Any]) -> None:
    if not observed["ipv6"]:
        pytest.skip("no IPv6 in this kernel, or no ip6tables/nft")
    assert "IPv6: capture installed" in observed["iptables"]
    assert steps(observed)["vip6-http-v3"] == {"v3": 20}


def test_the_outbound_listener_still_serves_explicit_proxy_clients(observed: dict[str, Any]) -> None:
    assert steps(observed)["explicit-proxy-all-v1"] == {"v1": 20}


def test_tcp_to_a_vip_follows_the_seed_tcp_task(observed: dict[str, Any]) -> None:
    s = steps(observed)
    assert s["vip-tcp-all-v1"] == {"one": 200}
    shifted = s["vip-tcp-20-v2"]
    assert set(shifted) == {"one", "two"} and sum(shifted.values()) == 1000
    lo, hi = binomial_interval(1000, 0.2)
    assert lo <= shifted["two"] <= hi, (shifted, (lo, hi))


def test_no_loop_when_the_endpoint_is_in_the_captured_range(observed: dict[str, Any]) -> None:
    """The service's port declares no protocol (sniffed as HTTP); its endpoint 127.10.0.5 is captured for
    the application, dialled directly or through the VIP, but not for the proxy's own connection: each
    request reaches the upstream exactly once."""
    s = steps(observed)
    assert s["loop-vip"] == {"loop": 100}
    assert s["loop-endpoint"] == {"loop": 100}
    assert observed["loop_upstream_requests"] == 200


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_allow_any_relays_an_unregistered_destination_as_passthrough(observed: dict[str, Any]) -> None:
    assert steps(observed)["unregistered-allow-any"] == {"outside": 20}
    assert observed["unregistered_accepted_allow_any"] == 20
    assert _metric(observed["metrics_allow_any"], "istio_tcp_connections_opened_total",
                   destination_service_name="PassthroughCluster", response_flags="-") == 20


def test_registry_only_refuses_it_as_blackhole(observed: dict[str, Any]) -> None:
    assert steps(observed)["unregistered-registry-only"] == {"closed": 20}
    assert observed["unregistered_accepted_registry_only"] == observed["unregistered_accepted_allow_any"]
    assert _metric(observed["metrics_registry_only"], "istio_tcp_connections_opened_total",
                   destination_service_name="BlackHoleCluster", response_flags="UH") == 20
    assert steps(observed)["registry-only-vip-http"] == {"v3": 20}  # registered services still served


def test_inbound_capture_relays_to_the_application(observed: dict[str, Any]) -> None:
    """A client in a second namespace dials the pod's address; the rules send it to 15006 and the sidecar
    relays to the application, counted with reporter="destination"."""
    assert steps(observed)["inbound"] == {"inbound-app": 20}
    assert observed["inbound_app_requests"] == 20
    opened = _metric(observed["metrics_allow_any"], "istio_tcp_connections_opened_total", reporter="destination",
                     destination_service_name="InboundPassthroughCluster")
    assert opened == 10  # the client's ten keep-alive connections


def test_cleanup_removes_the_capture(observed: dict[str, Any]) -> None:
    """Without the rules nothing listens on the VIP: the earlier answers came through the capture."""
    assert steps(observed)["after-cleanup"] == {"refused": 5}


def test_metrics_count_captured_requests_under_the_service(observed: dict[str, Any]) -> None:
    text = observed["metrics_allow_any"]
    v3 = _metric(text, "istio_requests_total", destination_service_name="reviews", destination_version="v3",
                 response_code="200")
    s = steps(observed)
    assert v3 == (s["vip-http-50-v3"]["v3"] + s["vip-http-v3"]["v3"] + s["unlisted-ip-host-reviews"]["v3"]
                  + s.get("vip6-http-v3", {}).get("v3", 0))
    assert re.search(r'istio_tcp_connections_opened_total\{[^}]*destination_service_name="tcp-echo"', text)
