"""Path normalization end to end: for each request target, the route that matched (the backend sees the
route's `x-route` header; the `/admin` rule answers 403 itself) and the path the backend received.

The edge config has three rules: prefix `/admin` → directResponse 403, prefix `/public` → backend with
`x-route: public`, anything else → backend with `x-route: other`.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import ProxyProcess
from tests.e2e.security_harness import RecordingBackend, edge_config, free_port, one_shot

ADMIN = (403, "admin", None)


def served(route: str, path: str) -> tuple[int, str, str]:
    return 200, route, path


BAD = (400, None, None)

# (target, (status, route that matched, path the backend received)) with the default setting, `base`
BASE_CASES: list[tuple[str, tuple[int, str | None, str | None]]] = [
    ("/admin", ADMIN),
    ("/public/../admin", ADMIN),
    ("/public/%2e%2e/admin", ADMIN),
    ("/public/%2E%2E/admin", ADMIN),
    ("/public/.%2e/admin", ADMIN),
    ("/public/%2e./admin", ADMIN),
    ("/%61dmin", ADMIN),
    ("/%61%64%6d%69%6e/x", ADMIN),
    ("/./admin", ADMIN),
    ("/public\\..\\admin", ADMIN),
    ("/public/..\\admin", ADMIN),
    ("http://t/public/../admin", ADMIN),
    ("http://web/%61dmin", ADMIN),
    ("http://web/public/%2e%2e/%61dmin", ADMIN),
    ("/x/../admin?next=/public", ADMIN),
    ("/%41dmin", served("other", "/Admin")),  # matching is case-sensitive, as in Envoy
    ("/public/./x", served("public", "/public/x")),
    ("/public/a/../b", served("public", "/public/b")),
    ("/public/%2e/x", served("public", "/public/x")),
    ("/public/x/..", served("public", "/public/")),
    ("/x/../public/y", served("public", "/public/y")),
    ("/public/%7Euser", served("public", "/public/~user")),
    ("/public/a%20b", served("public", "/public/a%20b")),
    ("/public\\x", served("public", "/public/x")),
    ("/public/x?next=/../admin", served("public", "/public/x?next=/../admin")),
    ("/public//x", served("public", "/public//x")),  # base does not merge slashes
    ("//admin", served("other", "//admin")),
    ("/public%2F..%2Fadmin", served("public", "/public%2F..%2Fadmin")),  # escaped slashes kept
    ("/public%2f..%2fadmin", served("public", "/public%2f..%2fadmin")),
    ("/public/..%2Fadmin", served("public", "/public/..%2Fadmin")),
    ("/..", BAD),
    ("/public/../../admin", BAD),
    ("/%2e%2e/admin", BAD),
    ("/public/%00", BAD),
    ("/public/%zz", BAD),
]


def request(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: web\r\n\r\n".encode("latin-1")


def check(port: int, backend: RecordingBackend, target: str, expected: tuple[int, str | None, str | None]) -> None:
    before = len(backend.requests)
    [response] = one_shot(port, request(target))
    status, route, path = expected
    assert response.status == status, (target, response)
    if status == 200:
        received = response.json()
        assert (received["headers"]["x-route"], received["path"]) == (route, path), target
    else:
        assert len(backend.requests) == before, (target, backend.requests[before:])  # answered by the proxy


@pytest.fixture(scope="module")
def backend() -> Iterator[RecordingBackend]:
    server = RecordingBackend()
    yield server
    server.close()


def start(root: Path, backend: RecordingBackend, *args: str) -> tuple[ProxyProcess, int]:
    config_dir = root / "config"
    config_dir.mkdir(parents=True)
    port = free_port()
    edge_config(config_dir, backend.port, port)
    return ProxyProcess(config_dir, ["--access-log", "off", *args]).start(), port


@pytest.fixture(scope="module")
def base_gateway(tmp_path_factory: pytest.TempPathFactory, backend: RecordingBackend) -> Iterator[int]:
    proxy, port = start(tmp_path_factory.mktemp("base"), backend)  # the default: base
    yield port
    proxy.stop()


@pytest.mark.parametrize(("target", "expected"), BASE_CASES, ids=[t for t, _ in BASE_CASES])
def test_base(base_gateway: int, backend: RecordingBackend, target: str,
              expected: tuple[int, str | None, str | None]) -> None:
    check(base_gateway, backend, target, expected)


def test_the_table_is_large_enough() -> None:
    assert len(BASE_CASES) >= 30


def test_none_forwards_paths_untouched(tmp_path: Path, backend: RecordingBackend) -> None:
    proxy, port = start(tmp_path, backend, "--path-normalization", "none")
    try:
        check(port, backend, "/public/../admin", served("public", "/public/../admin"))
        check(port, backend, "/%61dmin", served("other", "/%61dmin"))
        check(port, backend, "/..", served("other", "/.."))
    finally:
        proxy.stop()


def test_merge_slashes(tmp_path: Path, backend: RecordingBackend) -> None:
    proxy, port = start(tmp_path, backend, "--path-normalization", "merge-slashes")
    try:
        check(port, backend, "//admin", ADMIN)
        check(port, backend, "/public//x///y", served("public", "/public/x/y"))
        check(port, backend, "/public%2F..%2Fadmin", served("public", "/public%2F..%2Fadmin"))
    finally:
        proxy.stop()


DECODE_CASES = [
    ("/public%2F..%2Fadmin", ADMIN),
    ("/public%2f..%2fadmin", ADMIN),
    ("/public%5C..%5Cadmin", ADMIN),
    ("//admin", ADMIN),
    ("/a%2f%2e%2e%2fadmin", ADMIN),
    ("/public//x", served("public", "/public/x")),
    ("/public%2Fx", served("public", "/public/x")),
]


def test_decode_and_merge_slashes_reaches_every_worker(tmp_path: Path, backend: RecordingBackend) -> None:
    proxy, port = start(tmp_path, backend, "--path-normalization", "decode-and-merge-slashes", "--workers", "2")
    assert proxy.proc is not None
    try:
        assert len(psutil.Process(proxy.proc.pid).children()) == 2
        rounds = 10  # each request on its own connection: the kernel spreads them over both workers
        for _ in range(rounds):
            for target, expected in DECODE_CASES:
                check(port, backend, target, expected)
        total = rounds * len(DECODE_CASES)
        worker0 = local_requests(proxy)
        # every answer above was right, and worker 0 served some but not all of them (all 70 on one
        # worker has probability 2^-69): the setting reached both processes
        assert 0 < worker0 < total, worker0
    finally:
        proxy.stop()


def local_requests(proxy: ProxyProcess) -> int:
    with urllib.request.urlopen(f"{proxy.admin}/metrics?local=1", timeout=10) as resp:
        text = resp.read().decode()
    return int(sum(s.value for f in text_string_to_metric_families(text) if f.name == "istio_requests"
                   for s in f.samples if s.name == "istio_requests_total"))
