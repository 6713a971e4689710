"""Istio HTTP policies end to end: the real proxy process, real upstream servers, a mirror that records
what it gets and one that never answers.

Consistent hash (header and cookie) keeps keys on their endpoint across requests and a reload, and a
new endpoint takes about a quarter of the keys; mirrors get `-shadow` copies without the primary
noticing a mirror that hangs; a CORS preflight is answered by the proxy; sourceLabels select rules by
the proxy's own `--labels`; redirects rewrite prefixes and derive the request's port; `authority`
matches with the port; `%VAR%` header values are rendered.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.upstream import hashing
from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.stats import binomial_interval

KEYS = 1000
N_MIRRORED = 400
SAMPLED_PERCENT = 25.0


class Recorder:
    """An HTTP/1.1 server that records every request (head and body) and answers 200, or never answers."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Recorder:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                self.requests.append((head[0], headers, body))
                if not self.answer:
                    await reader.read()  # hold the connection until the proxy gives up
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nshadow")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


def yaml_docs(*docs: str) -> str:
    return "\n---\n".join(docs)


def hash_rule(host: str, policy: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}
  trafficPolicy: {{loadBalancer: {{consistentHash: {policy}}}}}
"""


async def mapping(port: int, keys: range, authority: str = "reviews:9080") -> dict[int, str]:
    client = Client(port)
    out = {}
    for key in keys:
        resp = await client.request("GET", f"http://{authority}/r", authority, {"x-user": f"user-{key}"})
        assert resp.status == 200
        out[key] = resp.json()["version"]
    await client.close()
    return out


def ring_share(ports: list[int], port: int) -> float:
    """The fraction of the hash space the endpoint on `port` owns in the ring of these endpoints."""
    points, owners = hashing.ring(tuple(("127.0.0.1", p, 1) for p in ports), 1024)
    wanted = ports.index(port)
    owned = sum(h - (points[i - 1] if i else points[-1] - (1 << 64)) for i, h in enumerate(points)
                if owners[i] == wanted)
    return owned / (1 << 64)


@pytest.fixture
async def four() -> AsyncIterator[dict[str, Upstream]]:
    ups = {v: await Upstream(v).start() for v in ("v1", "v2", "v3", "v4")}
    yield ups
    for u in ups.values():
        await u.close()


async def test_consistent_hash_keeps_keys_across_reload_and_moves_a_quarter_to_a_new_endpoint(
        tmp_path: Path, four: dict[str, Upstream]) -> None:
    config = tmp_path / "config"
    config.mkdir()
    three = [(four[v].port, v) for v in ("v1", "v2", "v3")]
    write_atomic(config / "reviews.yaml", service_entry("reviews", 9080, three))
    (config / "dr.yaml").write_text(hash_rule("reviews", "{httpHeaderName: x-user}"))
    proxy = ProxyProcess(config, ["--access-log", "off"]).start()
    try:
        keys = range(KEYS)
        first = await mapping(proxy.mesh_port, keys)
        assert set(first.values()) == {"v1", "v2", "v3"}
        # a reload with the same endpoints (another object changes): every key stays (ten lookups of
        # each of 1,000 keys are in tests/upstream/test_hashing.py)
        version = proxy.version()
        (config / "other.yaml").write_text(service_entry("ratings", 9080, [(four["v4"].port, "v1")]))
        version = proxy.wait_version(version)
        assert await mapping(proxy.mesh_port, keys) == first
        # a 4th endpoint: about a quarter of the keys move, all of them to it
        write_atomic(config / "reviews.yaml", service_entry("reviews", 9080, [*three, (four["v4"].port, "v4")]))
        proxy.wait_version(version)
        after = await mapping(proxy.mesh_port, keys)
        moved = [k for k in keys if after[k] != first[k]]
        # the keys that move are those landing on the new endpoint's share of the ring (about 1/4, known
        # exactly from its points): a Binomial(1000, share) count, bounded at 1e-6
        share = ring_share([u.port for u in four.values()], four["v4"].port)
        lo, hi = binomial_interval(KEYS, share)
        assert lo <= len(moved) <= hi, (len(moved), share)
        assert 0.15 * KEYS <= len(moved) <= 0.35 * KEYS, len(moved)
        assert {after[k] for k in moved} == {"v4"}
    finally:
        proxy.stop()


async def test_hash_cookie_is_set_when_absent_and_then_sticks(tmp_path: Path, four: dict[str, Upstream]) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "details.yaml").write_text(yaml_docs(
        service_entry("details", 9080, [(u.port, v) for v, u in four.items()]),
        hash_rule("details", "{httpCookie: {name: sticky, path: /, ttl: 60s}}")))
    proxy = ProxyProcess(config, ["--access-log", "off"]).start()
    try:
        sticky = {}
        for _ in range(20):
            client = Client(proxy.mesh_port)  # a connection of its own: a cookie of its own
            resp = await client.request("GET", "http://details:9080/d", "details:9080")
            await client.close()
            assert resp.status == 200
            cookie = resp.headers["set-cookie"]
            assert cookie.startswith('sticky="') and cookie.endswith('"; Max-Age=60; Path=/; HttpOnly'), cookie
            sticky[cookie.split(";")[0]] = resp.json()["version"]
        assert len(sticky) == 20
        client = Client(proxy.mesh_port)
        for cookie, version in sticky.items():
            for _ in range(3):
                resp = await client.request("GET", "http://details:9080/d", "details:9080", {"cookie": cookie})
                assert resp.json()["version"] == version and "set-cookie" not in resp.headers
        await client.close()
    finally:
        proxy.stop()


RATINGS_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{sourceLabels: {app: reviews}}]
    directResponse: {status: 418, body: {string: "for reviews only"}}
  - match: [{sourceLabels: {app: productpage}, uri: {prefix: /source}}]
    directResponse: {status: 200, body: {string: "for productpage"}}
  - match: [{sourceNamespace: other}]
    directResponse: {status: 418, body: {string: "for namespace other only"}}
  - match: [{authority: {exact: "ratings:9080"}, uri: {prefix: /authority}}]
    directResponse: {status: 200, body: {string: "with port"}}
  - match: [{uri: {prefix: /authority}}]
    directResponse: {status: 200, body: {string: "without port"}}
  - match: [{uri: {prefix: /old}}]
    redirect: {prefixRewrite: /new}
  - match: [{uri: {prefix: /moved}}]
    redirect: {authority: new.example.com, derivePort: FROM_REQUEST_PORT}
  - route: [{destination: {host: ratings}}]
    mirrors:
    - destination: {host: shadow}
    - destination: {host: hang}
    - destination: {host: sampled}
      percentage: {value: SAMPLED_PERCENT}
    corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      maxAge: 10m
    headers:
      request:
        set: {x-client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", x-cluster: "%UPSTREAM_CLUSTER%"}
      response:
        add: {x-upstream: "%UPSTREAM_HOST%"}
""".replace("SAMPLED_PERCENT", str(SAMPLED_PERCENT))


def mirror_counts(proxy: ProxyProcess) -> dict[tuple[str, str, str], float]:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shiftproxy_mirror_requests_total":
                out[(s.labels["cluster_name"].split("|")[3].split(".")[0], s.labels["response_code"],
                     s.labels["response_flags"])] = s.value
    return out


async def test_ratings_policies(tmp_path: Path) -> None:
    ratings = await Upstream("ratings").start()
    shadow, sampled, hang = await Recorder().start(), await Recorder().start(), await Recorder(answer=False).start()
    config = tmp_path / "config"
    config.mkdir()
    (config / "ratings.yaml").write_text(yaml_docs(
        service_entry("ratings", 9080, [(ratings.port, "v1")]),
        *(service_entry(name, 9080, [(r.port, "v1")]) for name, r in
          (("shadow", shadow), ("sampled", sampled), ("hang", hang))),
        RATINGS_VS))
    proxy = ProxyProcess(config, ["--access-log", "off", "--labels", "app=productpage,version=v1",
                                  "--namespace", "default"]).start()
    try:
        client = Client(proxy.mesh_port)

        async def get(path: str, authority: str = "ratings:9080", headers: dict[str, str] | None = None,
                      method: str = "GET", body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
            resp = await client.request(method, path, authority, headers, body)
            return resp.status, resp.headers, resp.body

        # sourceLabels: the rule for app=reviews is dropped for this proxy (app=productpage), the one for
        # app=productpage is kept; sourceNamespace `other` is not this proxy's
        assert (await get("/source"))[::2] == (200, b"for productpage")
        # authority matches the :authority header as sent, port included
        assert (await get("/authority"))[2] == b"with port"
        assert (await get("/authority", "ratings"))[2] == b"without port"
        # redirects: prefixRewrite keeps the rest of the path; FROM_REQUEST_PORT is the port addressed
        status, headers, _ = await get("/old/page?q=1")
        assert (status, headers["location"]) == (301, "http://ratings:9080/new/page?q=1")
        status, headers, _ = await get("/moved/x")
        assert (status, headers["location"]) == (301, "http://new.example.com:9080/moved/x")

        # CORS preflight: answered by the proxy, never forwarded (nor mirrored)
        before = ratings.requests
        status, headers, body = await get("/r", method="OPTIONS", headers={
            "origin": "https://app.example.com", "access-control-request-method": "POST"})
        assert (status, body) == (200, b"")
        assert headers["access-control-allow-origin"] == "https://app.example.com"
        assert headers["access-control-allow-methods"] == "GET,POST"
        assert headers["access-control-allow-headers"] == "x-token"
        assert headers["access-control-max-age"] == "600"
        assert ratings.requests == before

        # the route: header values rendered, mirrors copied, the hanging mirror ignored by the primary
        for i in range(N_MIRRORED):
            status, headers, body = await get(f"/r/{i}", headers={"origin": "https://app.example.com"},
                                              method="POST", body=b"payload-%d" % i)
            assert status == 200 and b'"version": "ratings"' in body
            assert headers["access-control-allow-origin"] == "https://app.example.com"
            assert headers["x-upstream"] == f"127.0.0.1:{ratings.port}"
        assert ratings.last_headers["x-client"] == "127.0.0.1"
        assert ratings.last_headers["x-cluster"] == "outbound|9080||ratings.default.svc.cluster.local"
        await client.close()

        async def settle() -> None:
            async with asyncio.timeout(20):
                while len(shadow.requests) < N_MIRRORED or len(hang.requests) < N_MIRRORED:
                    await asyncio.sleep(0.05)
        await settle()
        # every primary response came back while the hanging mirror held every copy unanswered
        assert len(hang.requests) == N_MIRRORED
        first_line, shadow_headers, shadow_body = shadow.requests[0]
        assert first_line == "POST /r/0 HTTP/1.1" and shadow_body == b"payload-0"
        assert shadow_headers["host"] == "ratings-shadow:9080"
        assert {h["host"] for _, h, _ in hang.requests} == {"ratings-shadow:9080"}
        lo, hi = binomial_interval(N_MIRRORED, SAMPLED_PERCENT / 100)
        assert lo <= len(sampled.requests) <= hi, len(sampled.requests)
        counts = mirror_counts(proxy)
        assert counts[("shadow", "200", "-")] == N_MIRRORED
        assert counts[("sampled", "200", "-")] == len(sampled.requests)
        assert not [k for k in counts if k[0] == "hang"]  # still in flight: nothing to count yet
    finally:
        proxy.stop()
        for r in (shadow, sampled, hang):
            r.close()
        await ratings.close()
