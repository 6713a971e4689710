"""The Istio → Envoy bootstrap translation used for the Envoy column of the benchmark, on the Istio samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.envoy_config import istio_to_envoy, load_objects
from benchmarks.istio_config import BackendPorts, ListenerPorts, bench_istio_yaml, service_entry
from tests.paths import BOOKINFO_NET, TCP_ECHO

TCP_PROXY = "envoy.filters.network.tcp_proxy"
HCM = "envoy.filters.network.http_connection_manager"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    # the registry the samples get from Kubernetes, as ServiceEntries with one endpoint per version
    path.write_text("\n---\n".join([
        service_entry("tcp-echo", "tcp-echo", 9000, "tcp", "TCP", [("v1", 19001), ("v2", 19002)]),
        service_entry("reviews", "reviews", 9080, "http", "HTTP", [("v1", 19081), ("v2", 19082), ("v3", 19083)]),
        service_entry("productpage", "productpage", 9080, "http", "HTTP", [("v1", 19090)]),
    ]) + "\n")
    return path


def listener(bootstrap: dict[str, Any], port: int) -> dict[str, Any]:
    found = [item for item in bootstrap["static_resources"]["listeners"]
             if item["address"]["socket_address"]["port_value"] == port]
    assert len(found) == 1, f"expected one listener on {port}, got {len(found)}"
    return found[0]


def network_filter(item: dict[str, Any]) -> dict[str, Any]:
    (chain,) = item["filter_chains"]
    (filt,) = chain["filters"]
    return filt


def cluster_endpoints(bootstrap: dict[str, Any], name: str) -> list[tuple[str, int]]:
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name]
    return [(ep["endpoint"]["address"]["socket_address"]["address"],
             ep["endpoint"]["address"]["socket_address"]["port_value"])
            for group in cluster["load_assignment"]["endpoints"] for ep in group["lb_endpoints"]]


def referenced_clusters(bootstrap: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for item in bootstrap["static_resources"]["listeners"]:
        config = network_filter(item)["typed_config"]
        actions = [config]
        for vhost in config.get("route_config", {}).get("virtual_hosts", []):
            actions += [route["route"] for route in vhost["routes"] if "route" in route]
        for action in actions:
            if "cluster" in action:
                names.add(action["cluster"])
            names.update(c["name"] for c in action.get("weighted_clusters", {}).get("clusters", []))
    return names


def assert_valid_looking(bootstrap: dict[str, Any]) -> None:
    """What Envoy checks first: typed configs, unique listener names/ports, every routed cluster defined."""
    resources = bootstrap["static_resources"]
    names = [item["name"] for item in resources["listeners"]]
    ports = [item["address"]["socket_address"]["port_value"] for item in resources["listeners"]]
    assert len(set(names)) == len(names) and len(set(ports)) == len(ports)
    for item in resources["listeners"]:
        assert network_filter(item)["typed_config"]["@type"].startswith("type.googleapis.com/envoy.")
    defined = [c["name"] for c in resources["clusters"]]
    assert len(set(defined)) == len(defined)
    assert referenced_clusters(bootstrap) == set(defined)
    for item in resources["listeners"]:
        domains = [d for vh in network_filter(item)["typed_config"].get("route_config", {}).get("virtual_hosts", [])
                   for d in vh["domains"]]
        assert len(set(domains)) == len(domains), "Envoy rejects a domain in two virtual hosts"
    assert "admin" in bootstrap and bootstrap["admin"]["address"]["socket_address"]["port_value"] > 0


def test_tcp_echo_20_v2_becomes_tcp_proxy_weighted_clusters(registry: Path) -> None:
    # The TCP shifting task: apply tcp-echo-all-v1.yaml, then tcp-echo-20-v2.yaml replaces the VirtualService.
    objects = load_objects([registry, TCP_ECHO / "tcp-echo-all-v1.yaml", TCP_ECHO / "tcp-echo-20-v2.yaml"])
    config = istio_to_envoy(objects, admin_port=15000)

    assert config.warnings == ()
    assert_valid_looking(config.bootstrap)
    tcp = network_filter(listener(config.bootstrap, 31400))
    assert tcp["name"] == TCP_PROXY
    assert tcp["typed_config"]["weighted_clusters"]["clusters"] == [
        {"name": "outbound|9000|v1|tcp-echo.default.svc.cluster.local", "weight": 80},
        {"name": "outbound|9000|v2|tcp-echo.default.svc.cluster.local", "weight": 20},
    ]
    assert cluster_endpoints(config.bootstrap, "outbound|9000|v1|tcp-echo.default.svc.cluster.local") == [
        ("127.0.0.1", 19001)]
    assert cluster_endpoints(config.bootstrap, "outbound|9000|v2|tcp-echo.default.svc.cluster.local") == [
        ("127.0.0.1", 19002)]


def test_tcp_echo_all_v1_is_a_single_cluster(registry: Path) -> None:
    config = istio_to_envoy(load_objects([registry, TCP_ECHO / "tcp-echo-all-v1.yaml"]), admin_port=15000)

    typed = network_filter(listener(config.bootstrap, 31400))["typed_config"]
    assert typed["cluster"] == "outbound|9000|v1|tcp-echo.default.svc.cluster.local"
    assert "weighted_clusters" not in typed
    assert_valid_looking(config.bootstrap)


def test_bookinfo_gateway_and_reviews_50_v3(registry: Path) -> None:
    objects = load_objects([registry, BOOKINFO_NET / "bookinfo-gateway.yaml",
                            BOOKINFO_NET / "destination-rule-all.yaml",
                            BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml"])
    config = istio_to_envoy(objects, admin_port=15000, mesh_http_port=15001)

    assert_valid_looking(config.bootstrap)
    gateway = network_filter(listener(config.bootstrap, 8080))
    assert gateway["name"] == HCM
    (vhost,) = gateway["typed_config"]["route_config"]["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    matches = [route["match"] for route in vhost["routes"]]
    assert matches == [{"path": "/productpage"}, {"prefix": "/static"}, {"path": "/login"}, {"path": "/logout"},
                       {"prefix": "/api/v1/products"}]
    assert {route["route"]["cluster"] for route in vhost["routes"]} == {
        "outbound|9080||productpage.default.svc.cluster.local"}
    assert cluster_endpoints(config.bootstrap, "outbound|9080||productpage.default.svc.cluster.local") == [
        ("127.0.0.1", 19090)]

    mesh = network_filter(listener(config.bootstrap, 15001))["typed_config"]
    (reviews,) = [vh for vh in mesh["route_config"]["virtual_hosts"] if "reviews" in vh["domains"]]
    assert "reviews.default.svc.cluster.local" in reviews["domains"]
    (route,) = reviews["routes"]
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["timeout"] == "0s"  # Istio's default: no route timeout
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "weight": 50},
        {"name": "outbound|9080|v3|reviews.default.svc.cluster.local", "weight": 50},
    ]
    assert cluster_endpoints(config.bootstrap, "outbound|9080|v3|reviews.default.svc.cluster.local") == [
        ("127.0.0.1", 19083)]


def test_host_without_registry_entry_is_reported() -> None:
    config = istio_to_envoy(load_objects([TCP_ECHO / "tcp-echo-all-v1.yaml"]), admin_port=15000)

    assert any("tcp-echo.default.svc.cluster.local: no ServiceEntry" in w for w in config.warnings)
    assert cluster_endpoints(config.bootstrap, "outbound|9000|v1|tcp-echo.default.svc.cluster.local") == []


def test_zero_weight_destinations_are_left_out(tmp_path: Path, registry: Path) -> None:
    vs = (TCP_ECHO / "tcp-echo-20-v2.yaml").read_text().replace("weight: 80", "weight: 0")
    (tmp_path / "vs.yaml").write_text(vs)
    objects = load_objects([registry, TCP_ECHO / "tcp-echo-all-v1.yaml", tmp_path / "vs.yaml"])

    typed = network_filter(listener(istio_to_envoy(objects, admin_port=15000).bootstrap, 31400))["typed_config"]
    assert typed["cluster"] == "outbound|9000|v2|tcp-echo.default.svc.cluster.local"
    assert "weighted_clusters" not in typed


def test_bench_config_round_trips_to_envoy(tmp_path: Path) -> None:
    listeners = ListenerPorts(http=18080, tcp=18081, bulk=18082)
    backends = BackendPorts(http_v1=19001, http_v2=19002, tcp_v1=19003, tcp_v2=19004, bulk=19005)
    (tmp_path / "bench.yaml").write_text(bench_istio_yaml(listeners, backends, (50, 50), (80, 20)))
    config = istio_to_envoy(load_objects([tmp_path]), admin_port=19900)

    assert config.warnings == ()
    assert_valid_looking(config.bootstrap)
    (vhost,) = network_filter(listener(config.bootstrap, 18080))["typed_config"]["route_config"]["virtual_hosts"]
    weighted = vhost["routes"][0]["route"]["weighted_clusters"]["clusters"]
    assert [(cluster_endpoints(config.bootstrap, w["name"]), w["weight"]) for w in weighted] == [
        ([("127.0.0.1", 19001)], 50), ([("127.0.0.1", 19002)], 50)]
    tcp = network_filter(listener(config.bootstrap, 18081))["typed_config"]["weighted_clusters"]["clusters"]
    assert [(cluster_endpoints(config.bootstrap, w["name"]), w["weight"]) for w in tcp] == [
        ([("127.0.0.1", 19003)], 80), ([("127.0.0.1", 19004)], 20)]
    bulk = network_filter(listener(config.bootstrap, 18082))["typed_config"]
    assert cluster_endpoints(config.bootstrap, bulk["cluster"]) == [("127.0.0.1", 19005)]
    # Envoy's default circuit breakers (1,024 connections) would cap the idle-connection load.
    for cluster in config.bootstrap["static_resources"]["clusters"]:
        assert cluster["circuit_breakers"]["thresholds"][0]["max_connections"] == 2**32 - 1


def test_yaml_output_has_no_anchors_and_round_trips(registry: Path) -> None:
    objects = load_objects([registry, BOOKINFO_NET / "bookinfo-gateway.yaml",
                            BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml",
                            BOOKINFO_NET / "destination-rule-all.yaml"])
    config = istio_to_envoy(objects, admin_port=15000, mesh_http_port=15001, access_log_path="/dev/null")
    text = config.to_yaml()

    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == config.bootstrap
