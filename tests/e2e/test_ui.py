"""The live traffic page: `/ui/data` from the real proxy, and `/ui` in a real headless browser (Debian's
chromium with chromium-driver) that watches a route's observed share move after a weight change,
without reloading, and saves the screenshot the README shows."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.paths import ROOT

V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
SCREENSHOT = ROOT / "docs" / "ui.png"

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


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "se.yaml").write_text(service_entry("reviews", 9080, [(reviews[v].port, v) for v in ("v1", "v2")]))
    (d / "dr.yaml").write_text(DESTINATION_RULE)
    (d / "vs.yaml").write_text(virtual_service(10))
    return d


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


def _observed_v2(browser: Any) -> float | None:
    cells = browser.find_elements("css selector", f'[data-cluster="{V2}"] [data-stat="observed"] b')
    text = cells[0].text if cells else ""
    return float(text.rstrip("%")) / 100 if text.endswith("%") else None


async def test_browser_sees_the_observed_share_move_without_reloading(config_dir: Path) -> None:
    browser = await asyncio.to_thread(_browser)
    from selenium.webdriver.support.ui import WebDriverWait

    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    stop = asyncio.Event()
    load = asyncio.create_task(_load(proxy.mesh_port, stop))
    try:
        await asyncio.to_thread(browser.get, f"{proxy.admin}/ui")
        loaded_at = await asyncio.to_thread(browser.execute_script, "return window.pageLoadedAt")
        wait = WebDriverWait(browser, 90, poll_frequency=0.5)
        # some traffic observed at 90/10: v2's share is far below a half
        await asyncio.to_thread(wait.until, lambda b: (_observed_v2(b) is not None and
                                                       b.find_element("id", "window").text not in ("…", "0")))
        await asyncio.sleep(3)
        before = await asyncio.to_thread(_observed_v2, browser)
        assert before is not None and before < 0.35, before
        version = proxy.version()
        write_atomic(config_dir / "vs.yaml", virtual_service(90))
        proxy.wait_version(version)
        # the page updates itself: configured 90 %, then the observed share climbs past a half
        configured = f'[data-cluster="{V2}"] [data-stat="weight"] b'
        await asyncio.to_thread(wait.until, lambda b: b.find_element("css selector", configured).text == "90 (90.0%)")
        await asyncio.to_thread(wait.until, lambda b: (_observed_v2(b) or 0) > 0.5)
        assert await asyncio.to_thread(browser.execute_script, "return window.pageLoadedAt") == loaded_at
        changes = await asyncio.to_thread(lambda: browser.find_element("id", "change-list").text)
        assert "default/reviews#0: reviews:9080 v1 10, reviews:9080 v2 90" in changes
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert await asyncio.to_thread(browser.save_screenshot, str(SCREENSHOT))
        # usable on a phone: nothing wider than a 390 px screen
        await asyncio.to_thread(browser.set_window_size, 390, 844)
        overflow = await asyncio.to_thread(browser.execute_script,
                                           "return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, overflow
    finally:
        stop.set()
        await load
        await asyncio.to_thread(browser.quit)
        proxy.stop()
