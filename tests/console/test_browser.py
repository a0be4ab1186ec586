"""The console in a real headless Chromium: it follows a scale-out live, without reloading the page.

Set TIDAL_SCREENSHOTS=docs to write the views' screenshots as docs/console-*.png.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.console.conftest import TOKEN

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="Debian's chromium and chromium-driver are not installed (scripts/system-deps.sh)"),
]

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@contextlib.contextmanager
def headless_chromium():
    """Debian's chromium, headless, with a fresh profile and no background network traffic."""
    profile = tempfile.mkdtemp(prefix="tidal-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1360,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser():
    with headless_chromium() as driver:
        yield driver


def wait(driver, predicate, what: str, timeout: float = 12.0):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d))
    except Exception as exc:
        shown = text(driver, "#view")[:600]
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{shown}") from exc


def shot(driver, name: str, tmp_path: Path) -> None:
    target = os.environ.get("TIDAL_SCREENSHOTS")
    folder = Path(target) if target else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    # Full-page height (plus the window's own frame), so the tables below the fold are in the picture too.
    height, frame = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(1360, min(2600, height + frame + 8))
    driver.save_screenshot(str(folder / f"console-{name}.png"))
    driver.set_window_size(1360, 1000)


# The page re-renders a table when its data changes, so reads are single scripts: one consistent snapshot.
def replica_rows(driver) -> list[tuple[str, str]]:
    return [tuple(x) for x in driver.execute_script(
        "return [...document.querySelectorAll('table[data-testid=replicas] tbody tr[data-replica]')]"
        ".map(r => [r.dataset.replica, r.querySelector('[data-billing]').dataset.billing])")]


def text(driver, selector: str) -> str:
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
                                 selector)


def count(driver, selector: str) -> int:
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def test_console_follows_a_scale_out_live(console, provider, browser, tmp_path):
    provider.neighbours = True
    d = browser
    d.get(console.url)
    cell = "tr[data-service=sentiment] [data-testid=replicas]"
    wait(d, lambda d: text(d, cell), "the service list")
    assert text(d, cell) == "2/2"
    assert text(d, "#mode") == "read-only"
    d.execute_script("window.__sameDocument = 'yes'")  # gone if the page reloads

    console.call(provider.scale_out, 3, 60.0)
    wait(d, lambda d: text(d, cell) == "5/5", "the list to show 5/5 replicas")
    row = text(d, "tr[data-service=sentiment]")
    assert "sentiment" in row and "1623831335" in row and "onnxruntime_onnx" in row and "%" in row
    shot(d, "services", tmp_path)

    d.execute_script("document.querySelector('tr[data-service=sentiment] a').click()")
    wait(d, lambda d: len(replica_rows(d)) == 5, "5 replicas in the detail view")
    assert replica_rows(d) == [(r.name, r.billing) for r in provider.replicas]
    # uPlot drew the four charts into canvases.
    for chart in ("qps", "latency", "replicas", "cost"):
        assert count(d, f"[data-testid=chart-{chart}] canvas") == 1, chart
    assert "SucceededRescale" in text(d, "table[data-testid=decisions]")

    # A second wave, and a spot replica is being preempted: the open page picks both up.
    console.call(provider.scale_out, 3, 90.0)
    console.call(provider.preempt_replica, 1)
    wait(d, lambda d: len(replica_rows(d)) == 8, "8 replicas after the second scale-out")
    rows = replica_rows(d)
    assert rows == [(r.name, r.billing) for r in provider.replicas]
    assert {b for _, b in rows} == {"spot", "on-demand"}
    assert sum(b == "on-demand" for _, b in rows) == 3  # replicas 0, 3, 6: about 30%
    wait(d, lambda d: text(d, "[data-testid=replica-count]") == "7/8", "7 of 8 ready: one is draining")
    assert "PreemptionNotice" in text(d, "table[data-testid=events]")
    assert d.execute_script("return window.__sameDocument") == "yes"
    shot(d, "service", tmp_path)

    d.find_element(By.CSS_SELECTOR, "nav a[data-nav=nodepools]").click()
    wait(d, lambda d: count(d, "table[data-testid=nodes] tbody tr[data-node]") == 8, "8 nodes in the node pool")
    zones = d.execute_script("return Object.fromEntries([...document.querySelectorAll("
                             "'table[data-testid=zones] tbody tr[data-zone]')].map(r => [r.dataset.zone, "
                             "[...r.cells].slice(1).map(c => Number(c.innerText))]))")
    # Replicas 0..7 alternate zones h, i; 0, 3, 6 are on-demand: h has 0, 6 (od) and 2, 4 (spot).
    assert zones == {"cn-hangzhou-h": [2, 2], "cn-hangzhou-i": [3, 1]}
    policy = text(d, "table[data-testid=policy]")
    assert "on demand percentage above base\t30" in policy and "cost-optimized" in policy
    assert count(d, "button.preempt") == 0  # read-only without the token
    assert d.execute_script("return window.__sameDocument") == "yes"
    shot(d, "nodepools", tmp_path)


def test_actions_appear_with_the_token(console, provider, browser):
    d = browser
    d.get(console.url + "#/services/sentiment")
    wait(d, lambda d: len(replica_rows(d)) == 2, "the detail view")
    assert not d.find_elements(By.CSS_SELECTOR, "[data-testid=scale-form]")
    d.find_element(By.ID, "token").send_keys("wrong")
    d.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(d, lambda d: "rejected" in text(d, "#mode"), "the token to be rejected")
    box = d.find_element(By.ID, "token")
    box.clear()
    box.send_keys(TOKEN)
    d.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(d, lambda d: text(d, "#mode") == "actions enabled", "actions to be enabled")
    form = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=scale-form]"), "the scale form")[0]
    field = form.find_element(By.NAME, "replicas")
    field.clear()
    field.send_keys("6")
    form.find_element(By.TAG_NAME, "button").click()
    wait(d, lambda d: "desired replicas set to 6" in text(d, "[data-testid=scale-form]"), "the scale answer")
    assert provider.actions_seen == [("scale", "sentiment", 6)]

    d.find_element(By.CSS_SELECTOR, "nav a[data-nav=nodepools]").click()
    wait(d, lambda d: count(d, "button.preempt") == 1, "a preempt button on the one spot node")
    d.execute_script("document.querySelector('button.preempt').click()")
    wait(d, lambda d: "preemption in 30 s" in text(d, "#status"), "the preempt answer")
    assert provider.actions_seen[-1] == ("preempt", "inference-i-01", 30.0)


def test_console_over_the_reconciler_during_a_scale_out(tmp_path, browser):
    """The provider over a real Reconciler and Store (fake backend and gateway): the reference procedure's scale-out to 10
    replicas on the 30%-on-demand pool, watched from one open page."""
    from tests.console.conftest import ConsoleServer
    from tests.console.test_control import World
    from tidal.capacity.policies.ess import EssParams, split
    from tidal.console.app import ConsoleApp

    world = World(tmp_path)
    world.run(30)
    server = ConsoleServer(ConsoleApp(world.provider, token=TOKEN, clock=world.clock))
    server.start()
    try:
        d = browser
        d.get(server.url + "#/services/sentiment")
        wait(d, lambda d: len(replica_rows(d)) == 1, "the first replica")
        d.execute_script("window.__sameDocument = 'yes'")
        world.gateway.qps_["sentiment"] = 100.0
        world.run(150)
        od, spot = split(10, EssParams(on_demand_percentage=30))
        wait(d, lambda d: len(replica_rows(d)) == 10, "10 replicas after the scale-out")
        billing = [b for _, b in replica_rows(d)]
        assert (billing.count("on-demand"), billing.count("spot")) == (od, spot)
        assert {name for name, _ in replica_rows(d)} == {r.id for r in world.store.replicas("sentiment")}
        assert "SuccessfulRescale" in text(d, "table[data-testid=events]")
        assert d.execute_script("return window.__sameDocument") == "yes"
    finally:
        server.stop()


def test_console_shows_a_rollouts_releases_live(tmp_path, browser):
    """A canary started beside the stable release: the open page shows both releases with their weights and the
    gateway's counts, the rollout's step, and the rollback when it comes."""
    import asyncio

    from tests.console.conftest import ConsoleServer
    from tests.console.test_control import ReleasesGateway, World
    from tidal.console.app import ConsoleApp
    from tidal.console.control import ControlPlaneProvider
    from tidal.console.readmodel import StoreReadModel
    from tidal.control.rollouts import Rollouts

    world = World(tmp_path)
    world.gateway = world.r.gateway = ReleasesGateway()
    world.provider = ControlPlaneProvider(StoreReadModel(world.store, world.gateway, world.r.catalog, world.clock),
                                          world.ops)
    world.run(30)
    server = ConsoleServer(ConsoleApp(world.provider, token=TOKEN, clock=world.clock))
    server.start()
    try:
        d = browser
        d.get(server.url + "#/services/sentiment")
        wait(d, lambda d: len(replica_rows(d)) == 1, "the first replica")
        assert count(d, "table[data-testid=releases]") == 0  # one release: no releases table
        asyncio.run(Rollouts(world.r, lambda: None).start("sentiment", {
            "changes": {"version": "202406080900"}, "canary_traffic_percent": 10, "steps": "10,50,100",
            "bake": "10m"}))
        world.run(30)
        wait(d, lambda d: count(d, "table[data-testid=releases] tbody tr[data-release]") == 2, "two releases")
        rows = d.execute_script("return [...document.querySelectorAll('table[data-testid=releases] tbody tr')]"
                                ".map(r => [...r.cells].map(c => c.innerText.trim()))")
        assert rows[0][0] == "sentiment-202406011200" and rows[0][2].startswith("90%") and rows[0][4] == "1/900"
        assert rows[1][0] == "sentiment-202406080900" and rows[1][2].startswith("10%") and rows[1][5] == "15.0 ms"
        assert "step 1/3: canary sentiment-202406080900 at 10%" in text(d, "[data-testid=rollout-progress]")
        shot(d, "rollout", tmp_path)
        asyncio.run(Rollouts(world.r, lambda: None).rollback("sentiment"))
        wait(d, lambda d: "rolled back by hand" in text(d, "[data-testid=rollout-progress]"), "the rollback")
        assert "RolloutRolledBack" in text(d, "table[data-testid=events]")
    finally:
        server.stop()
