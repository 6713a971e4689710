"""The live traffic page: `/ui/data` from the real proxy, and `/ui` in a real headless browser (Debian's
chromium with chromium-driver) that watches a route's observed share move after a weight change,
without reloading, and saves the screenshot the README shows."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Client, ProxyProcess, Upstream, free_port, service_entry, write_atomic
from tests.e2e.test_tcp_shifting import EchoServer
from tests.paths import ROOT

V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
# the README's picture is refreshed only when asked (SHIFTPROXY_UPDATE_SCREENSHOT=1), so a test run leaves the
# checkout as it found it
README_SCREENSHOT = ROOT / "docs" / "ui.png"

DESTINATION_RULE = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def virtual_service(v2: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  annotations: {{shiftproxy.io/sticky: "header=x-user"}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {100 - v2}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2}
"""


def tcp_echo(port: int, one: int, two: int) -> str:
    """tcp-echo on the sidecar at `port`, 80/20 per connection."""
    return service_entry("tcp-echo", port, [(one, "v1"), (two, "v2")], protocol="TCP", port_name="tcp") + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo]
  tcp:
  - route:
    - {destination: {host: tcp-echo, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, subset: v2}, weight: 20}
"""


@pytest.fixture
async def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Any:
    one, two = await EchoServer("one").start(), await EchoServer("two").start()
    d = tmp_path / "config"
    d.mkdir()
    (d / "se.yaml").write_text(service_entry("reviews", 9080, [(reviews[v].port, v) for v in ("v1", "v2")]))
    (d / "dr.yaml").write_text(DESTINATION_RULE)
    (d / "vs.yaml").write_text(virtual_service(10))
    (d / "tcp-echo.yaml").write_text(tcp_echo(free_port(), one.port, two.port))
    yield d
    one.close()
    two.close()


async def open_tcp(config_dir: Path, n: int) -> list[asyncio.StreamWriter]:
    """n long-lived connections through the sidecar's tcp-echo listener, each answered once."""
    port = int((config_dir / "tcp-echo.yaml").read_text().split("number: ", 1)[1].split(",", 1)[0])
    writers = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hi\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).endswith(b" hi\n")
        writers.append(writer)
    return writers


async def _load(port: int, stop: asyncio.Event, limit: int = 100_000) -> int:
    """Requests with ever new sticky keys until `stop` (or `limit`), over one keep-alive connection."""
    client = Client(port)
    sent = 0
    while not stop.is_set() and sent < limit:
        await client.request("GET", "http://reviews:9080/", "reviews:9080", {"x-user": f"user-{sent}"})
        sent += 1
        if sent % 50 == 0:
            await asyncio.sleep(0.01)  # let the test's other work run
    await client.close()
    return sent


def ui_data(proxy: ProxyProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{proxy.admin}/ui/data", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def test_ui_data_reports_configured_and_observed_shares(config_dir: Path) -> None:
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        ui_data(proxy)  # the first sample: the window starts here
        stop = asyncio.Event()
        stop.set()
        client = Client(proxy.mesh_port)
        for i in range(300):
            await client.request("GET", "http://reviews:9080/", "reviews:9080", {"x-user": f"u{i}"})
        await client.close()
        await asyncio.sleep(1.1)  # the next poll takes a new sample (at most one a second)
        data = await asyncio.to_thread(ui_data, proxy)
        route = next(r for r in data["routes"] if r["name"] == "default/reviews#0")
        assert route["sticky"] == "header x-user" and route["empty_destination"] == "redistribute"
        by_subset = {d["cluster"].split("|")[2]: d for d in route["destinations"]}
        assert by_subset["v1"]["configured_share"] == 0.9 and by_subset["v2"]["configured_share"] == 0.1
        assert by_subset["v1"]["count"] + by_subset["v2"]["count"] == 300
        assert by_subset["v1"]["observed_share"] + by_subset["v2"]["observed_share"] == pytest.approx(1.0)
        assert by_subset["v1"]["error_rate"] == 0 and by_subset["v1"]["p99_ms"] is not None
        assert data["config_version"] == 1 and data["changes"] == []
        version = proxy.version()
        write_atomic(config_dir / "vs.yaml", virtual_service(50))
        proxy.wait_version(version)
        changes = (await asyncio.to_thread(ui_data, proxy))["changes"]
        assert changes[0]["version"] == version + 1
        assert changes[0]["summary"] == ["default/reviews#0: reviews:9080 v1 50, reviews:9080 v2 50"]
        with urllib.request.urlopen(f"{proxy.admin}/ui", timeout=5) as resp:
            assert resp.headers["content-type"].startswith("text/html")
            assert b'fetch("/ui/data"' in resp.read()
    finally:
        proxy.stop()


def _browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed: `make test` installs them when run "
                    "as root (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,820"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def texts(browser: Any, selector: str) -> list[str]:
    """The text of every element `selector` matches, read in one step (the page redraws every second)."""
    return browser.execute_script(  # type: ignore[no-any-return]
        "return Array.from(document.querySelectorAll(arguments[0])).map((e) => e.textContent)", selector)


def _observed_v2(browser: Any) -> float | None:
    cells = texts(browser, f'[data-cluster="{V2}"] [data-stat="observed"] b')
    text = cells[0] if cells else ""
    return float(text.rstrip("%")) / 100 if text.endswith("%") else None


async def test_browser_sees_the_observed_share_move_without_reloading(config_dir: Path, tmp_path: Path) -> None:
    browser = await asyncio.to_thread(_browser)
    from selenium.webdriver.support.ui import WebDriverWait

    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    stop = asyncio.Event()
    load = asyncio.create_task(_load(proxy.mesh_port, stop))
    connections: list[asyncio.StreamWriter] = []
    try:
        await asyncio.to_thread(browser.get, f"{proxy.admin}/ui")
        loaded_at = await asyncio.to_thread(browser.execute_script, "return window.pageLoadedAt")
        wait = WebDriverWait(browser, 90, poll_frequency=0.5)
        # some traffic observed at 90/10: v2's share is far below a half
        await asyncio.to_thread(wait.until, lambda b: (_observed_v2(b) is not None and
                                                       texts(b, "#window")[0] not in ("…", "0")))
        connections += await open_tcp(config_dir, 10)  # inside the page's window: counted as observed
        await asyncio.sleep(3)
        before = await asyncio.to_thread(_observed_v2, browser)
        assert before is not None and before < 0.35, before
        version = proxy.version()
        write_atomic(config_dir / "vs.yaml", virtual_service(90))
        proxy.wait_version(version)
        # the page updates itself: configured 90 %, then the observed share climbs past a half
        configured = f'[data-cluster="{V2}"] [data-stat="weight"] b'
        await asyncio.to_thread(wait.until, lambda b: texts(b, configured) == ["90 (90.0%)"])
        await asyncio.to_thread(wait.until, lambda b: (_observed_v2(b) or 0) > 0.5)
        assert await asyncio.to_thread(browser.execute_script, "return window.pageLoadedAt") == loaded_at
        # TCP: the ten open connections, per version
        tcp = '[data-route="default/tcp-echo#tcp0"] [data-stat="open conns"] b'
        await asyncio.to_thread(wait.until, lambda b: sum(int(t) for t in texts(b, tcp)) == len(connections))
        changes = " ".join(await asyncio.to_thread(texts, browser, "#change-list li"))
        assert "default/reviews#0: reviews:9080 v1 10, reviews:9080 v2 90" in changes
        screenshot = README_SCREENSHOT if os.environ.get("SHIFTPROXY_UPDATE_SCREENSHOT") else tmp_path / "ui.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(screenshot))
        assert screenshot.stat().st_size > 1000
        # usable on a phone: nothing wider than a 390 px screen
        await asyncio.to_thread(browser.set_window_size, 390, 844)
        overflow = await asyncio.to_thread(browser.execute_script,
                                           "return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, overflow
    finally:
        stop.set()
        await load
        for writer in connections:
            writer.close()
        await asyncio.to_thread(browser.quit)
        proxy.stop()
