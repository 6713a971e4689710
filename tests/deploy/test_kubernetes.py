"""deploy/kubernetes: every manifest validates against the Kubernetes schema of a pinned version (strict:
unknown fields are errors), the kustomizations name files that exist, and what the pods run is valid for
shiftproxy itself (command-line arguments, the Istio YAML in the ConfigMap, the capture uid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxy.cli import build_parser
from proxy.config.load import load_text
from proxy.config.validate import validate
from tests.paths import ROOT

KUBERNETES_VERSION = "1.31.0"  # native sidecars (initContainers[].restartPolicy) are on by default since 1.29
DEPLOY = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(DEPLOY.rglob("kustomization.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> list[dict[str, Any]]:
    return [d for p in MANIFESTS for d in documents(p)]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError


def test_the_validator_rejects_what_it_should() -> None:
    """A misspelt field is an error at this version, so the checks above can fail."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "x", "image": "x", "restartPolicyy": "Always"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_resources_exist(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    for resource in kustomization["resources"]:
        target = path.parent / resource
        assert target.is_file() or (target / "kustomization.yaml").is_file(), resource


def pod_specs() -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in all_documents() if d["kind"] == "Deployment"]


def shiftproxy_containers() -> list[dict[str, Any]]:
    return [c for spec in pod_specs() for c in (*spec.get("initContainers", []), *spec["containers"])
            if c["image"].startswith("shiftproxy")]


def test_container_arguments_parse() -> None:
    parser = build_parser()
    commands = set()
    for container in shiftproxy_containers():
        args = parser.parse_args(container["args"])
        commands.add(args.command)
        if args.command == "run":
            assert args.config == ["/etc/shiftproxy"]
    assert commands == {"run", "iptables"}


def test_the_sidecar_runs_as_the_uid_the_capture_skips() -> None:
    parser = build_parser()
    sidecars = 0
    for spec in pod_specs():
        containers = [*spec.get("initContainers", []), *spec["containers"]]
        init = [c for c in containers if c["image"].startswith("shiftproxy") and c["args"][0] == "iptables"]
        if not init:
            continue
        uid = parser.parse_args(init[0]["args"]).proxy_uid
        assert "NET_ADMIN" in init[0]["securityContext"]["capabilities"]["add"]
        proxy = [c for c in containers if c["image"].startswith("shiftproxy") and c["args"][0] == "run"]
        assert len(proxy) == 1 and proxy[0]["securityContext"]["runAsUser"] == uid
        assert "--capture" in proxy[0]["args"]
        sidecars += 1
    assert sidecars == 2  # the classic and the native variant


def test_native_sidecar_starts_before_the_app() -> None:
    spec = documents(DEPLOY / "native-sidecar" / "productpage-sidecar.yaml")[0]["spec"]["template"]["spec"]
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["shiftproxy-init", "shiftproxy"]
    assert spec["initContainers"][1]["restartPolicy"] == "Always"
    assert "startupProbe" in spec["initContainers"][1]


def test_drain_fits_in_the_grace_period() -> None:
    parser = build_parser()
    for spec in pod_specs():
        for container in (*spec.get("initContainers", []), *spec["containers"]):
            if container["image"].startswith("shiftproxy") and container["args"][0] == "run":
                assert parser.parse_args(container["args"]).drain_timeout < spec["terminationGracePeriodSeconds"]


def test_mesh_config_is_valid_istio() -> None:
    configmap = next(d for d in all_documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] ==
                     "shiftproxy-mesh")
    objects = []
    for name, text in configmap["data"].items():
        loaded = load_text(text, name)
        assert not loaded.errors, loaded.errors
        objects += loaded.objects
    errors, _ = validate(objects)
    assert not errors, [str(e) for e in errors]
    assert {o.kind for o in objects} == {"ServiceEntry", "DestinationRule", "VirtualService", "Gateway"}
