"""The container files, checked without a Docker engine: hadolint on the Dockerfile, the compose file
against the Compose Specification's JSON schema, and every container command against our own parsers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from proxy.cli import build_parser as proxy_parser
from proxy.config.load import load_paths
from proxy.samples.__main__ import build_parser as samples_parser
from tests.paths import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_dockerfile_has_no_hadolint_errors() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run([hadolint, "--failure-threshold", "error", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_runs_as_non_root_with_healthcheck_and_ports() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in text
    assert "HEALTHCHECK" in text and "/ready" in text
    assert "EXPOSE 8080 31400 15000 15001" in text


def test_compose_file_matches_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate(COMPOSE, schema)  # raises with the offending path on any violation


def test_compose_has_the_seed_topology() -> None:
    services = COMPOSE["services"]
    for name in ("ingressgateway", "productpage-v1", "productpage-sidecar", "details-v1", "reviews-v1",
                 "reviews-v2", "reviews-v3", "ratings-v1", "tcp-echo-v1", "tcp-echo-v2", "client"):
        assert name in services, name
    # the sidecar shares productpage's network namespace, and productpage sends through it
    assert services["productpage-sidecar"]["network_mode"] == "service:productpage-v1"
    assert services["productpage-v1"]["environment"]["HTTP_PROXY"] == "http://127.0.0.1:15001"
    assert set(services["ingressgateway"]["ports"]) == {"8080:8080", "31400:31400"}


@pytest.mark.parametrize("name", sorted(set(COMPOSE["services"]) - {"client"}))
def test_every_container_command_parses(name: str) -> None:
    service = COMPOSE["services"][name]
    command = service.get("command")
    entrypoint = service.get("entrypoint") or ["shiftproxy"]
    if entrypoint == ["python", "-m", "proxy.samples"]:
        samples_parser().parse_args(command)
    else:
        args = proxy_parser().parse_args(command)
        mounted = {v.split(":")[1]: ROOT / v.split(":")[0] for v in service["volumes"]}
        local = [str(mounted["/etc/shiftproxy"] / Path(p).relative_to("/etc/shiftproxy")) for p in args.config]
        loaded = load_paths(local)
        assert loaded.errors == [] and loaded.objects, name


def _build_wheel(tmp_path: Path, pyproject: str) -> tuple[Path, str]:
    """Build the wheel from a copy of the sources (the work tree gets no build/ or egg-info)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "proxy", src / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", src / "README.md")
    (src / "pyproject.toml").write_text(pyproject)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return next((tmp_path / "dist").glob("shiftproxy-*.whl")), out.stdout + out.stderr


def test_wheel_installs_only_the_proxy_package_and_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    wheel, log = _build_wheel(tmp_path, (ROOT / "pyproject.toml").read_text())
    with zipfile.ZipFile(wheel) as zf:
        top_level = {name.split("/", 1)[0] for name in zf.namelist()}
        metadata = zf.read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/METADATA").decode()
    # the sample apps live under proxy/, so nothing generic like `samples` lands in site-packages
    assert top_level == {"proxy", wheel.name.rsplit("-", 3)[0] + ".dist-info"}, top_level
    assert "License-Expression: Apache-2.0" in metadata
    assert "deprecat" not in log.lower(), [line for line in log.splitlines() if "eprecat" in line]


def test_the_deprecation_check_sees_a_deprecated_license_table(tmp_path: Path) -> None:
    """The check above can fail: the old `license = {text = …}` form makes setuptools warn in the same log."""
    old = (ROOT / "pyproject.toml").read_text().replace('license = "Apache-2.0"', 'license = { text = "Apache-2.0" }')
    _, log = _build_wheel(tmp_path, old)
    assert "deprecat" in log.lower()


def test_proxies_read_config_read_only_and_keep_applied_objects_in_a_state_volume() -> None:
    """The container user (10001) cannot write a bind-mounted checkout: applied objects go to the named
    volume, shared by both proxies, and nothing is written into config/compose/."""
    services = COMPOSE["services"]
    proxies = [name for name, s in services.items() if s.get("entrypoint") is None and name != "client"]
    assert sorted(proxies) == ["ingressgateway", "productpage-sidecar"]
    for name in proxies:
        service = services[name]
        assert "./config/compose:/etc/shiftproxy:ro" in service["volumes"], name
        assert "state:/var/lib/shiftproxy" in service["volumes"], name
        assert service["environment"]["SHIFTPROXY_STATE_DIR"] == "/var/lib/shiftproxy", name
    assert "state" in COMPOSE["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "SHIFTPROXY_STATE_DIR=/var/lib/shiftproxy" in dockerfile
    assert "chown shiftproxy /var/lib/shiftproxy" in dockerfile  # a fresh named volume inherits the owner
    assert "COPY config/compose /etc/shiftproxy" in dockerfile and "--chown=10001 config" not in dockerfile


def test_app_containers_do_not_inherit_the_proxy_health_check() -> None:
    for name, service in COMPOSE["services"].items():
        if service.get("entrypoint") == ["python", "-m", "proxy.samples"]:
            assert service["healthcheck"] == {"disable": True}, name
    example = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if "an app:" in line)
    assert "--no-healthcheck" in example
