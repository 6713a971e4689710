"""`shiftproxy demo`: which step files it applies and the paths it prints (no processes started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.demo import HTTP_STEPS, TCP_STEPS, guide, shown, step_files
from tests.paths import BOOKINFO_NET, ROOT, SAMPLES, TCP_ECHO


def test_default_is_this_projects_config_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTIO_SAMPLES", raising=False)
    assert step_files() == (ROOT / "config" / "steps", ROOT / "config" / "steps")
    for name in (*HTTP_STEPS, *TCP_STEPS):
        assert (ROOT / "config" / "steps" / name).is_file(), name


def test_istio_samples_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTIO_SAMPLES", raising=False)
    assert step_files(istio_samples=SAMPLES) == (BOOKINFO_NET, TCP_ECHO)
    monkeypatch.setenv("ISTIO_SAMPLES", str(SAMPLES))
    assert step_files() == (BOOKINFO_NET, TCP_ECHO)
    # the flag wins over the environment, --steps over both
    assert step_files(istio_samples=ROOT / "nowhere", steps=ROOT / "config" / "steps")[0] == ROOT / "config" / "steps"


def test_a_directory_without_the_step_files_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"step files not found: .*bookinfo/networking/virtual-service-all-v1.yaml"):
        step_files(istio_samples=tmp_path)


def test_guide_prints_paths_a_user_can_type(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    text = guide((ROOT / "config" / "steps", ROOT / "config" / "steps"), Path("/tmp/demo"))
    assert "shiftproxy apply -f config/steps/virtual-service-reviews-50-v3.yaml" in text
    assert "shiftproxy apply -f config/steps/tcp-echo-20-v2.yaml" in text
    assert "shared" not in text
    monkeypatch.chdir(tmp_path)  # elsewhere: the full path
    assert shown(ROOT / "config" / "steps") == str(ROOT / "config" / "steps")


def test_demo_refuses_a_samples_dir_without_the_steps(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "proxy", "demo", "--istio-samples", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"step files not found: {tmp_path}/bookinfo/networking/virtual-service-all-v1.yaml" in out.stderr


GATEWAY_API_STEPS = [
    "bookinfo/gateway-api/bookinfo-gateway.yaml", "bookinfo/gateway-api/route-all-v1.yaml",
    "bookinfo/gateway-api/route-reviews-50-v3.yaml", "bookinfo/gateway-api/route-reviews-v3.yaml",
    "tcp-echo/gateway-api/tcp-echo-all-v1.yaml", "tcp-echo/gateway-api/tcp-echo-20-v2.yaml",
    "bookinfo/platform/kube/bookinfo-versions.yaml",
]


@pytest.mark.parametrize("source", GATEWAY_API_STEPS)
def test_gateway_api_step_files_are_istios(source: str) -> None:
    """The README's Gateway API walkthrough applies config/steps/gateway-api/: Istio's files, one comment added."""
    ours = (ROOT / "config" / "steps" / "gateway-api" / Path(source).name).read_text()
    first, rest = ours.split("\n", 1)
    assert first.startswith("# Istio's samples/" + source)
    assert rest == (SAMPLES / source).read_text()
