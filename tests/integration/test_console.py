"""The web console in a real browser (headless Chromium, tests/support/browser.py), against a
real hub over TLS with tokens, a real edgecore and the simulated thermostat on Mosquitto.

An operator logs in, sees the fleet, a node, the devices and a device; sets a desired value
that the model refuses, one the API refuses (a viewer's), and one that reaches the thermostat
and shows in the chart; sees a node go NotReady when its edgecore is killed; reads the API
docs with no network. Each page is screenshotted (``make screenshots`` keeps them in
docs/console/ for docs/console.md).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import chromium, page_errors, screenshot
from tests.support.mosquitto import Mosquitto
from tests.support.nodecerts import join, new_token
from tests.support.procs import Edge, Hub

pytestmark = pytest.mark.integration
NS = "/api/v1/namespaces/default"
WAIT = 30


@dataclass
class Fleet:
    hub: Hub
    edges: dict[str, Edge]
    base: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, mqtt_broker: Mosquitto) -> Iterator[Fleet]:
    """A secure hub with two nodes: edge-1 serves the thermostat, edge-2 is killed."""
    base = tmp_path_factory.mktemp("console")
    hub = Hub(base / "hub", "--node-grace-period", "3", secure=True)
    hub.start()
    edges: dict[str, Edge] = {}
    thermostat = None
    broker = f"{mqtt_broker.host}:{mqtt_broker.port}"
    try:
        for node in ("edge-1", "edge-2"):
            join(hub, node, base / node)
            edges[node] = Edge(
                base / node, node, hub.edge, "--status-interval", "1", "--mqtt", broker
            )
            edges[node].start()
        example = resources.files("edgeward").joinpath("examples/thermostat.yaml").read_text()
        for doc in yaml.safe_load_all(example):
            plural = "devicemodels" if doc["kind"] == "DeviceModel" else "devices"
            status, body = hub.request("POST", f"{NS}/{plural}", doc)
            assert status == 201, body
        with open(base / "thermostat.log", "wb") as log:
            thermostat = subprocess.Popen(
                [sys.executable, "-m", "edgeward.mapper.thermostat", "--broker", broker,
                 "--device", "default/thermo", "--node", "edge-1", "--interval", "1"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        yield Fleet(hub, edges, base)
    finally:
        if thermostat is not None:
            thermostat.kill()
            thermostat.wait()
        for edge in edges.values():
            edge.kill()
        hub.kill()


def wait(driver: Any, what: str, condition: Any) -> Any:
    try:
        # live pages redraw: an element found and then read may be replaced in between
        return WebDriverWait(
            driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
        ).until(lambda d: condition(d))
    except Exception as exc:
        logged = driver.get_log("browser")
        raise AssertionError(
            f"timed out waiting for {what}; the browser logged {logged}; "
            f"the page: {driver.page_source[:3000]}"
        ) from exc


def text_of(driver: Any, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def log_in(driver: Any, hub: Hub, token: str, path: str = "/") -> None:
    """Open ``path``: without a token the console sends the browser to its login page, which
    takes the token and comes back."""
    driver.get(hub.api + "/ui/login")
    driver.execute_script("sessionStorage.clear()")
    driver.get(hub.api + path)
    wait(driver, "the login page", lambda d: "/ui/login" in d.current_url)
    field = wait(driver, "the token field", lambda d: d.find_element(By.ID, "token"))
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    wait(driver, f"{path} after logging in", lambda d: d.current_url == hub.api + path)
    refused_only(driver, "401")  # the page's first call, without a token


def set_desired(driver: Any, prop: str, value: str) -> None:
    form = driver.find_element(By.CSS_SELECTOR, f'form.set[data-property="{prop}"]')
    field = form.find_element(By.NAME, "value")
    field.clear()
    field.send_keys(value)
    form.find_element(By.TAG_NAME, "button").click()


def message(prop: str) -> str:
    return f'form.set[data-property="{prop}"] .form-message'


def desired_at_hub(hub: Hub) -> str:
    props = hub.request("GET", f"{NS}/devices/thermo")[1]["spec"]["properties"]
    return next(p["desired"]["value"] for p in props if p["name"] == "target")


def chart_last(driver: Any, prop: str) -> str:
    """The newest value the history figure of ``prop`` shows, read in one script: the page
    redraws the figure as reports arrive, so an element found first and read after may be gone."""
    return driver.execute_script(
        "const f = document.querySelector(`figure[data-property='${arguments[0]}']`);"
        "return f ? (f.dataset.last || '') : '';",
        prop,
    )


def refused_only(driver: Any, *codes: str) -> None:
    """The page logged no error but the API's refusals (with ``codes``) it acted on."""
    errors = page_errors(driver)
    assert [e for e in errors if not any(f"status of {c}" in e for c in codes)] == []


def test_an_operator_watches_the_fleet_and_sets_a_thermostat(fleet: Fleet, tmp_path: Path) -> None:
    hub = fleet.hub
    cell = text_of
    with chromium(tmp_path / "profile", trust=[hub.data_dir / "pki" / "server.crt"]) as driver:
        # no token: the login page; a node's token is refused there with the hub's reason
        node_token = new_token(hub, role="node", node="edge-1", singleUse=False)["token"]
        driver.get(hub.api + "/")
        wait(driver, "the login page", lambda d: "/ui/login" in d.current_url)
        driver.find_element(By.ID, "token").send_keys(node_token)
        driver.find_element(By.CSS_SELECTOR, "#login button").click()
        wait(driver, "a node token refused", lambda d: "viewer or an admin" in cell(d, "#notice"))
        assert "may not list or watch nodes" in cell(driver, "#notice")
        screenshot(driver, "login", tmp_path)
        refused_only(driver, "401", "403")  # no token yet, then a node's

        log_in(driver, hub, hub.token)
        edge1, edge2 = 'tr[data-key="edge-1"]', 'tr[data-key="edge-2"]'
        wait(driver, "edge-1 Ready", lambda d: cell(d, f"{edge1} .col-status") == "Ready")
        wait(driver, "edge-2 Ready", lambda d: cell(d, f"{edge2} .col-status") == "Ready")
        wait(driver, "a heartbeat", lambda d: "ago" in cell(d, f"{edge1} .col-heartbeat"))
        assert "%" in cell(driver, f"{edge1} .col-cpu")
        assert cell(driver, "#summary").startswith("2 nodes: 2 Ready")
        screenshot(driver, "fleet", tmp_path)
        assert page_errors(driver) == []

        driver.find_element(By.LINK_TEXT, "edge-1").click()
        thermo = 'tr[data-key="default/thermo"]'
        wait(driver, "the node's device", lambda d: cell(d, f"{thermo} .col-name") != "")
        assert cell(driver, '[data-field="Status"]') == "Ready"
        screenshot(driver, "node", tmp_path)

        driver.get(hub.api + "/ui/devices")
        target = 'tr[data-key="default/thermo#target"]'
        wait(driver, "target reported", lambda d: cell(d, f"{target} .col-reported") == "21")
        assert cell(driver, f"{target} .col-synced") == "yes"
        screenshot(driver, "devices", tmp_path)

        driver.get(hub.api + "/ui/devices/default/thermo")
        wait(driver, "the twins", lambda d: cell(d, 'tr[data-key="target"] .col-desired') == "21")
        wait(driver, "the temperature's chart", lambda d: chart_last(d, "temperature") != "")
        assert driver.find_elements(By.CSS_SELECTOR, "figure svg.chart path.line")
        # the model says 5..30: refused in the page, nothing sent
        set_desired(driver, "target", "99")
        wait(driver, "the model's refusal", lambda d: "at most 30" in cell(d, message("target")))
        assert desired_at_hub(hub) == "21"
        # the temperature is read-only: its field is disabled
        read_only = 'form.set[data-property="temperature"] input'
        assert not driver.find_element(By.CSS_SELECTOR, read_only).is_enabled()

        # a value the thermostat takes: the edge has it, then the device reports it
        set_desired(driver, "target", "25")
        reports = "The device reports target=25"
        wait(driver, "the device to report 25", lambda d: reports in cell(d, message("target")))
        wait(driver, "the chart of target at 25", lambda d: chart_last(d, "target") == "25")
        first = float(chart_last(driver, "temperature"))
        wait(
            driver,
            "the temperature to rise toward 25 in its chart",
            lambda d: float(chart_last(d, "temperature")) > first,
        )
        assert desired_at_hub(hub) == "25"
        screenshot(driver, "device", tmp_path)
        assert page_errors(driver) == []

        # a viewer reads everything; its write is refused by the API, said in the page
        viewer = new_token(hub, role="viewer", singleUse=False)["token"]
        log_in(driver, hub, viewer, "/ui/devices/default/thermo")
        wait(driver, "the twins", lambda d: cell(d, 'tr[data-key="target"] .col-desired') == "25")
        set_desired(driver, "target", "22")
        refusal = "is a viewer: it may read, not write"
        wait(driver, "the API's refusal", lambda d: refusal in cell(d, message("target")))
        assert desired_at_hub(hub) == "25"
        refused_only(driver, "403")

        # on a phone: one card per row, each cell labelled, nothing wider than the screen
        driver.get(hub.api + "/ui/devices")
        driver.set_window_size(390, 844)
        wait(driver, "the devices", lambda d: cell(d, f"{target} .col-desired") == "25")
        assert not driver.find_element(By.CSS_SELECTOR, "thead").is_displayed()
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        screenshot(driver, "devices-phone", tmp_path)
        driver.set_window_size(1280, 900)

        # a killed edgecore: its node turns NotReady on the open fleet page, with no reload
        driver.get(hub.api + "/")
        status2 = f"{edge2} .col-status"
        wait(driver, "edge-2 Ready", lambda d: cell(d, status2) == "Ready")
        driver.execute_script("window.sameDocument = true")
        fleet.edges["edge-2"].kill()
        wait(driver, "edge-2 NotReady", lambda d: cell(d, status2) == "NotReady")
        assert driver.execute_script("return window.sameDocument") is True
        assert cell(driver, f"{edge1} .col-status") == "Ready"
        screenshot(driver, "fleet-notready", tmp_path)
        assert page_errors(driver) == []


def test_the_api_docs_load_with_no_network(fleet: Fleet, tmp_path: Path) -> None:
    """/docs is Swagger UI from the hub's own files (the browser resolves no host name), over
    the hub's OpenAPI document, with an Authorize button for a bearer token."""
    hub = fleet.hub
    with chromium(tmp_path / "profile", trust=[hub.data_dir / "pki" / "server.crt"]) as driver:
        driver.get(hub.api + "/docs")
        wait(
            driver,
            "the operations",
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20,
        )
        assert driver.find_elements(By.CSS_SELECTOR, ".btn.authorize")
        assert "Edgeward cloudhub" in text_of(driver, ".info .title")
        screenshot(driver, "docs", tmp_path)
        assert page_errors(driver) == []
