"""The Istio → (Envoy bootstrap →) HAProxy translation used for the HAProxy column of the benchmark."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.envoy_config import istio_to_envoy, load_objects
from benchmarks.haproxy_config import envoy_to_haproxy
from benchmarks.istio_config import BackendPorts, ListenerPorts, bench_istio_yaml

LISTENERS = ListenerPorts(18001, 18002, 18003)
BACKENDS = BackendPorts(18011, 18012, 18013, 18014, 18015)


def haproxy_cfg(tmp_path: Path, http_weights: tuple[int, int], tcp_weights: tuple[int, int]) -> str:
    (tmp_path / "bench.yaml").write_text(bench_istio_yaml(LISTENERS, BACKENDS, http_weights, tcp_weights))
    bootstrap = istio_to_envoy(load_objects([tmp_path]), admin_port=0).bootstrap
    return envoy_to_haproxy(bootstrap, pidfile=str(tmp_path / "haproxy.pid"), access_log=True, nofile=20000)


def backend(cfg: str, port: int) -> str:
    return cfg.split(f"\nbackend l{port}_backend\n")[1].split("\n\n")[0]


def servers(cfg: str, port: int) -> dict[int, int]:
    return {int(p): int(w) for p, w in re.findall(r"server s\d+ 127\.0\.0\.1:(\d+) weight (\d+)", backend(cfg, port))}


def test_each_listener_gets_a_frontend_with_the_istio_weights(tmp_path: Path) -> None:
    cfg = haproxy_cfg(tmp_path, (50, 50), (80, 20))
    assert f"bind 127.0.0.1:{LISTENERS.http}" in cfg and "mode http" in backend(cfg, LISTENERS.http)
    assert "mode tcp" in backend(cfg, LISTENERS.tcp)
    assert servers(cfg, LISTENERS.http) == {BACKENDS.http_v1: 256, BACKENDS.http_v2: 256}
    assert servers(cfg, LISTENERS.tcp) == {BACKENDS.tcp_v1: 256, BACKENDS.tcp_v2: 64}
    assert servers(cfg, LISTENERS.bulk) == {BACKENDS.bulk: 256}
    # one weighted draw per request or connection, not HAProxy's default power of two choices
    assert backend(cfg, LISTENERS.http).count("balance random(1)") == 1


def test_uneven_weights_keep_their_ratio(tmp_path: Path) -> None:
    cfg = haproxy_cfg(tmp_path, (90, 10), (1, 99))
    assert servers(cfg, LISTENERS.http) == {BACKENDS.http_v1: 256, BACKENDS.http_v2: 28}
    assert servers(cfg, LISTENERS.tcp) == {BACKENDS.tcp_v1: 3, BACKENDS.tcp_v2: 256}


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_cfg(tmp_path, (50, 50), (80, 20)))
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
