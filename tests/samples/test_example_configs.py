"""config/: every example loads cleanly, matches the Istio samples it mirrors, and points at the port plan
the sample apps use (`python -m proxy.samples all`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from proxy.config.load import RawObject, load_paths
from proxy.samples.__main__ import PLAN

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
ISTIO = ROOT / ".." / "shared" / "istio-samples"
BOOKINFO_STEPS = ISTIO / "bookinfo" / "networking"

DEMO_SETS = {
    "local": [CONFIG / "bookinfo", CONFIG / "tcp-echo"],
    "compose": [CONFIG / "compose" / "bookinfo", CONFIG / "compose" / "tcp-echo"],
}
YAML_FILES = sorted(CONFIG.rglob("*.yaml"))


def load(*paths: Path) -> list[RawObject]:
    result = load_paths([str(p) for p in paths])
    assert [str(e) for e in result.errors] == []
    assert result.notices == []
    return result.objects


def by_key(objects: list[RawObject]) -> dict[tuple[str, str], RawObject]:
    return {(o.kind, o.name): o for o in objects}


def test_there_are_examples() -> None:
    assert len(YAML_FILES) >= 10


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CONFIG)))
def test_every_file_loads_without_errors(path: Path) -> None:
    objects = load(path)
    assert objects
    if "gateway-api" in path.parts:  # Istio's Gateway API samples: Gateway API kinds and core Services
        assert all(o.api_version in ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2", "v1")
                   for o in objects)
    elif "rollout" in path.parts:  # shiftproxy's own Rollout kind
        assert all(o.api_version == "shiftproxy.io/v1alpha1" for o in objects)
    else:
        assert all(o.api_version == "networking.istio.io/v1" for o in objects)


@pytest.mark.parametrize("variant", sorted(DEMO_SETS))
def test_each_demo_set_loads_as_one_config(variant: str) -> None:
    kinds = sorted((o.kind, o.name) for o in load(*DEMO_SETS[variant]))
    assert kinds == sorted([
        ("DestinationRule", "details"), ("DestinationRule", "productpage"), ("DestinationRule", "ratings"),
        ("DestinationRule", "reviews"), ("DestinationRule", "tcp-echo-destination"),
        ("Gateway", "bookinfo-gateway"), ("Gateway", "tcp-echo-gateway"),
        ("ServiceEntry", "details"), ("ServiceEntry", "productpage"), ("ServiceEntry", "ratings"),
        ("ServiceEntry", "reviews"), ("ServiceEntry", "tcp-echo"), ("VirtualService", "bookinfo"),
    ])


@pytest.mark.parametrize("step", [
    "virtual-service-all-v1.yaml", "virtual-service-reviews-50-v3.yaml", "virtual-service-reviews-v3.yaml",
    "virtual-service-reviews-80-20.yaml", "virtual-service-reviews-90-10.yaml",
    "virtual-service-reviews-test-v2.yaml",
])
def test_bookinfo_loads_with_each_istio_step(step: str) -> None:
    assert load(CONFIG / "bookinfo", BOOKINFO_STEPS / step)


@pytest.mark.parametrize("step", ["tcp-echo-all-v1.yaml", "tcp-echo-20-v2.yaml"])
def test_tcp_echo_service_loads_with_each_istio_step(step: str) -> None:
    assert load(CONFIG / "tcp-echo" / "tcp-echo-services.yaml", ISTIO / "tcp-echo" / step)


def test_tcp_echo_directory_loads_with_the_20_v2_step() -> None:
    assert load(CONFIG / "tcp-echo", ISTIO / "tcp-echo" / "tcp-echo-20-v2.yaml")


@pytest.mark.parametrize("directory", [CONFIG / "bookinfo", CONFIG / "compose" / "bookinfo"])
def test_bookinfo_gateway_and_rules_are_the_istio_samples(directory: Path) -> None:
    ours = by_key(load(directory / "bookinfo-gateway.yaml", directory / "destination-rule-all.yaml"))
    istio = by_key(load(BOOKINFO_STEPS / "bookinfo-gateway.yaml", BOOKINFO_STEPS / "destination-rule-all.yaml"))
    assert set(ours) == set(istio)
    for key, obj in istio.items():
        assert ours[key].body == obj.body, key


@pytest.mark.parametrize("directory", [CONFIG / "tcp-echo", CONFIG / "compose" / "tcp-echo"])
def test_tcp_echo_gateway_and_rule_are_the_istio_samples(directory: Path) -> None:
    ours = by_key(load(directory / "tcp-echo-gateway.yaml"))
    istio = by_key(load(ISTIO / "tcp-echo" / "tcp-echo-all-v1.yaml"))
    assert set(ours) == {("Gateway", "tcp-echo-gateway"), ("DestinationRule", "tcp-echo-destination")}
    for key, obj in ours.items():
        assert obj.body == istio[key].body, key


def endpoints(se: RawObject) -> list[tuple[str, dict[str, int], dict[str, str]]]:
    return [(ep["address"], ep["ports"], ep["labels"]) for ep in se.spec["endpoints"]]


def test_local_bookinfo_endpoints_follow_the_port_plan() -> None:
    entries = by_key(load(CONFIG / "bookinfo" / "bookinfo-services.yaml"))
    expected = {
        "productpage": [("v1", PLAN["productpage"])],
        "details": [("v1", PLAN["details"])],
        "reviews": [(v, PLAN[f"reviews-{v}"]) for v in ("v1", "v2", "v3")],
        "ratings": [("v1", PLAN["ratings"])],
    }
    assert {name for _, name in entries} == set(expected)
    for name, versions in expected.items():
        se = entries[("ServiceEntry", name)]
        assert se.namespace == "default"
        assert se.spec["hosts"] == [name]
        assert se.spec["resolution"] == "STATIC"
        assert se.spec["ports"] == [{"number": 9080, "name": "http", "protocol": "HTTP"}]
        assert endpoints(se) == [("127.0.0.1", {"http": port}, {"app": name, "version": version})
                                 for version, port in versions]


def test_compose_bookinfo_endpoints_are_compose_service_names() -> None:
    entries = by_key(load(CONFIG / "compose" / "bookinfo" / "bookinfo-services.yaml"))
    for (_, name), se in entries.items():
        assert se.spec["resolution"] == "DNS"
        for address, ports, labels in endpoints(se):
            assert (address, ports) == (f"{name}-{labels['version']}", {"http": 9080})
            assert labels["app"] == name


def test_tcp_echo_endpoints_follow_the_port_plan() -> None:
    local = by_key(load(CONFIG / "tcp-echo" / "tcp-echo-services.yaml"))[("ServiceEntry", "tcp-echo")]
    assert local.spec["ports"] == [{"number": 9000, "name": "tcp", "protocol": "TCP"},
                                   {"number": 9001, "name": "tcp-other", "protocol": "TCP"}]
    one, two = PLAN["tcp-echo-one"], PLAN["tcp-echo-two"]
    assert endpoints(local) == [
        ("127.0.0.1", {"tcp": one[0], "tcp-other": one[1]}, {"app": "tcp-echo", "version": "v1"}),
        ("127.0.0.1", {"tcp": two[0], "tcp-other": two[1]}, {"app": "tcp-echo", "version": "v2"}),
    ]
    compose = by_key(load(CONFIG / "compose" / "tcp-echo" / "tcp-echo-services.yaml"))[("ServiceEntry", "tcp-echo")]
    assert compose.spec["resolution"] == "DNS"
    assert [(a, p) for a, p, _ in endpoints(compose)] == [
        ("tcp-echo-v1", {"tcp": 9000, "tcp-other": 9001}), ("tcp-echo-v2", {"tcp": 9000, "tcp-other": 9001})]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _has("proxy.config.validate"), reason="proxy.config.validate not available")
@pytest.mark.parametrize("variant", sorted(DEMO_SETS))
def test_demo_sets_validate(variant: str) -> None:
    from proxy.config.validate import validate

    result = validate(load(*DEMO_SETS[variant]))
    diagnostics = result[0] if isinstance(result, tuple) else result
    assert [str(d) for d in diagnostics if getattr(d, "severity", "error") == "error"] == []


@pytest.mark.skipif(not _has("proxy.config.compile"), reason="proxy.config.compile not available")
def test_local_demo_compiles_to_the_planned_endpoints() -> None:
    from proxy.config.compile import CompileOptions, compile_snapshot

    snapshot = compile_snapshot(load(*DEMO_SETS["local"]), CompileOptions())

    def cluster(port: int, subset: str, host: str) -> list[tuple[str, int]]:
        found = snapshot.clusters[f"outbound|{port}|{subset}|{host}.default.svc.cluster.local"]
        return [(e.address, e.port) for e in found.endpoints]

    for version in ("v1", "v2", "v3"):
        assert cluster(9080, version, "reviews") == [("127.0.0.1", PLAN[f"reviews-{version}"])]
    assert len(cluster(9080, "", "reviews")) == 3
    assert cluster(9080, "v1", "productpage") == [("127.0.0.1", PLAN["productpage"])]
    assert cluster(9000, "v2", "tcp-echo") == [("127.0.0.1", PLAN["tcp-echo-two"][0])]
    assert cluster(9001, "v1", "tcp-echo") == [("127.0.0.1", PLAN["tcp-echo-one"][1])]
    assert 8080 in {port for _, _, port in snapshot.listener_keys()}


@pytest.mark.parametrize("step", sorted(p.name for p in (CONFIG / "steps").glob("*.yaml")))
def test_each_step_has_the_routes_of_the_istio_sample_of_its_name(step: str) -> None:
    """config/steps/ stands in for an Istio checkout: same VirtualServices as the file it is named after."""
    istio = ISTIO / "tcp-echo" / step if step.startswith("tcp-echo") else BOOKINFO_STEPS / step
    ours = {o.name: o.body["spec"] for o in load(CONFIG / "steps" / step) if o.kind == "VirtualService"}
    theirs = {o.name: o.body["spec"] for o in load(istio) if o.kind == "VirtualService"}
    assert ours == theirs and ours
