"""The plane's web UI in real headless Chromium, against ``temper plane serve`` on loopback
and the real control plane.

The tests assert on the DOM, never on pixels. Each test saves screenshots under its tmp_path,
and also into $TEMPER_UI_SCREENSHOTS when that is set.
"""

import asyncio
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from plane.store import Role
from plane.ui import CONTENT_SECURITY_POLICY
from temper import annotations
from temper.annotations import OriginalRequests, TierLoad, TierLoadEntry
from temper.controlplane import LocalControlPlane
from temper.controlplane.process import free_port
from temper.tiers import Tier
from tests import planeharness
from tests.browser import (
    Screenshots,
    console_errors,
    start_chromium,
    wait_for_text,
    wait_until,
)
from tests.fakes.kubelet import FakeKubelet
from tests.kubehelpers import (
    create_nodes,
    delete_nodes,
    ensure_priority_classes,
    pod_manifest,
    wait_for,
)
from tests.observesnapshots import FakePod, FakeThread, snapshot_body
from tests.planeharness import create_role_tokens, plane_log_path, point_node_at_kubelet

pytestmark = pytest.mark.controlplane

MACHINE_TYPE = "ui-test.large"
PRICE_TABLE = {
    "currency": "EUR",
    "machineTypes": {MACHINE_TYPE: {"cpuCoreHour": 0.04, "nodeHour": 0.16}},
}


@dataclass
class PlaneProcess:
    """A running ``temper plane serve``: its URL, one token per role and its log file."""

    url: str
    tokens: dict[Role, str]
    log_path: Path


def http_get(
    url: str, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` without following redirects; return status, headers and body."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
            return None

    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def ui_namespace(api_client: k8s.ApiClient) -> Iterator[str]:
    """A namespace for this module's pods, also the plane's safe-mode Namespace."""
    core = k8s.CoreV1Api(api_client)
    ensure_priority_classes(api_client)
    name = f"ui-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


@contextmanager
def running_plane(
    control_plane: LocalControlPlane, workdir: Path, namespace: str, *options: str
) -> Iterator[PlaneProcess]:
    """Run ``temper plane serve`` on a free loopback port with one token per role, named
    ui-<role>, and a price table; ``options`` are further command-line options.

    The plane runs as its own process because Selenium's calls block the test's thread.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "plane.sqlite3"
    prices = workdir / "prices.json"
    prices.write_text(json.dumps(PRICE_TABLE))
    tokens = create_role_tokens(database, "ui")
    # Qualified, because the fixture below is also named plane_process.
    with planeharness.plane_process(
        control_plane, database, namespace, "--price-table-path", str(prices), *options
    ) as url:
        yield PlaneProcess(url, tokens, plane_log_path(database))


@pytest.fixture(scope="module")
def plane_process(
    control_plane: LocalControlPlane,
    ui_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PlaneProcess]:
    """The plane every test of this module shares."""
    with running_plane(control_plane, tmp_path_factory.mktemp("plane-ui"), ui_namespace) as plane:
        yield plane


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile."""
    driver = start_chromium(tmp_path / "chromium-profile", tmp_path / "downloads")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path) -> Screenshots:
    return Screenshots(tmp_path / "screenshots", request.node.name)


@pytest.fixture
def ui_node(core_api: k8s.CoreV1Api) -> Iterator[str]:
    """A Ready Node with a machine type and a tier load, deleted afterwards."""
    name = f"ui-{uuid.uuid4().hex[:8]}"
    load = TierLoad(
        timestamp_seconds=1_700_000_000.0,
        node_cpu_millicores=4000,
        tiers={Tier.CRITICAL: TierLoadEntry(requested_cpu_millicores=1000, pods=1)},
    )
    create_nodes(
        core_api,
        [name],
        labels={"node.kubernetes.io/instance-type": MACHINE_TYPE},
        annotations={
            annotations.TIER_LOAD: load.encode(),
            annotations.SCHEDULER: annotations.SCHEDULER_SCX_LAYERED,
        },
    )
    yield name
    delete_nodes(core_api, [name])


def create_pod(
    core_api: k8s.CoreV1Api,
    namespace: str,
    name: str,
    node: str,
    *,
    priority_class: str | None = None,
    cpu_request: str = "100m",
    cpu_limit: str | None = None,
    pod_annotations: dict[str, str] | None = None,
) -> None:
    """Create a pod bound to ``node`` directly, as no scheduler is needed for the UI."""
    manifest = pod_manifest(
        name, priority_class=priority_class, cpu_request=cpu_request, cpu_limit=cpu_limit
    )
    manifest["spec"]["nodeName"] = node
    if pod_annotations:
        manifest["metadata"]["annotations"] = pod_annotations
    core_api.create_namespaced_pod(namespace, manifest)


# -- page helpers -----------------------------------------------------------------------------


def open_sign_in_form(driver: WebDriver, plane: PlaneProcess) -> WebElement:
    """Open /ui/ signed out and return the token input once it is shown."""
    driver.get(plane.url + "/ui/")
    return wait_until(driver, lambda d: d.find_element(By.ID, "token-input"), "the token input")


def sign_in(driver: WebDriver, plane: PlaneProcess, role: Role) -> None:
    """Open the UI and sign in with ``role``'s token through the form."""
    driver.get(plane.url + "/")
    token_input = wait_until(
        driver, lambda d: d.find_element(By.ID, "token-input"), "the token input"
    )
    token_input.send_keys(plane.tokens[role], Keys.ENTER)
    wait_until(
        driver,
        lambda d: d.find_element(By.ID, "main-nav").is_displayed(),
        f"the navigation after signing in as {role.value}",
    )


def open_view(driver: WebDriver, label: str) -> None:
    """Click a link of the main navigation and wait until the view has loaded."""
    driver.find_element(By.CSS_SELECTOR, "#main-nav").find_element(By.LINK_TEXT, label).click()
    wait_loaded(driver, label)


def open_node(driver: WebDriver, plane: PlaneProcess, node: str) -> None:
    """Open the view of ``node`` and wait until it has loaded."""
    driver.get(f"{plane.url}/ui/#/nodes/{node}")
    wait_loaded(driver, "node")


def wait_loaded(driver: WebDriver, view_name: str) -> None:
    wait_until(
        driver,
        lambda d: (
            d.find_element(By.ID, "main").get_attribute("aria-busy") is None
            and d.find_elements(By.CSS_SELECTOR, "#main h1")
        ),
        f"the {view_name} view to load",
    )


# Live updates re-render tables while a test reads them, so rows and lists are read in one
# script call, and clicks are retried when the element was replaced in between.
_ROW_SCRIPT = """
const row = [...document.querySelectorAll('tr[data-key]')]
  .find((candidate) => candidate.dataset.key === arguments[0]);
return row ? [...row.querySelectorAll('th, td')].map((cell) => cell.innerText.trim()) : null;
"""
_FACTS_SCRIPT = """
const list = document.querySelector('#' + arguments[0] + ' dl');
if (!list) return null;
const terms = [...list.querySelectorAll('dt')].map((term) => term.innerText.trim());
const values = [...list.querySelectorAll('dd')].map((value) => value.innerText.trim());
return Object.fromEntries(terms.map((term, index) => [term, values[index]]));
"""


def row_cells(driver: WebDriver, key: str) -> list[str]:
    """Return the cell texts of the table row whose data-key is ``key``, waiting for it."""
    cells: list[str] = wait_until(
        driver, lambda d: d.execute_script(_ROW_SCRIPT, key), f"table row {key}"
    )
    return cells


def facts_of(driver: WebDriver, element_id: str) -> dict[str, str]:
    """Return the term-to-value pairs of the description list inside ``element_id``."""
    facts: dict[str, str] = wait_until(
        driver, lambda d: d.execute_script(_FACTS_SCRIPT, element_id), f"the facts of {element_id}"
    )
    return facts


def click(driver: WebDriver, by: str, selector: str, description: str) -> None:
    """Click the element, retrying while live updates replace it."""

    def attempt(d: WebDriver) -> bool:
        try:
            d.find_element(by, selector).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    wait_until(driver, attempt, description)


def assert_no_console_errors(driver: WebDriver) -> None:
    errors = console_errors(driver)
    assert errors == [], f"browser console errors: {errors}"


def assert_no_error_shown(driver: WebDriver) -> None:
    assert driver.find_element(By.ID, "alert").text == ""


# -- serving ----------------------------------------------------------------------------------


def test_root_redirects_to_ui(plane_process: PlaneProcess) -> None:
    status, headers, _body = http_get(plane_process.url + "/")
    assert status == 302
    assert headers["Location"] == "/ui/"


@pytest.mark.parametrize("path", ["/ui/", "/ui/app.js", "/ui/style.css", "/ui/missing.js"])
def test_ui_responses_carry_security_headers(plane_process: PlaneProcess, path: str) -> None:
    _status, headers, _body = http_get(plane_process.url + path)
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


def test_ui_files_have_content_types(plane_process: PlaneProcess) -> None:
    expected = {
        "/ui/": "text/html",
        "/ui/app.js": "text/javascript",
        "/ui/style.css": "text/css",
        "/ui/favicon.svg": "image/svg+xml",
    }
    for path, content_type in expected.items():
        status, headers, _body = http_get(plane_process.url + path)
        assert status == 200, path
        assert headers["Content-Type"].split(";")[0] == content_type, path
    assert http_get(plane_process.url + "/ui/missing.js")[0] == 404


def test_ui_answers_revalidation_with_304(plane_process: PlaneProcess) -> None:
    _status, headers, _body = http_get(plane_process.url + "/ui/app.js")
    status, _headers, body = http_get(
        plane_process.url + "/ui/app.js", headers={"If-None-Match": headers["ETag"]}
    )
    assert (status, body) == (304, b"")


def test_ui_routes_stay_out_of_openapi(plane_process: PlaneProcess) -> None:
    status, _headers, body = http_get(
        plane_process.url + "/api/v1/openapi.json", plane_process.tokens[Role.VIEWER]
    )
    assert status == 200
    paths = json.loads(body)["paths"]
    assert paths, "the OpenAPI document lists no paths"
    assert [path for path in paths if not path.startswith("/api/v1/")] == []


def test_healthz_unchanged(plane_process: PlaneProcess) -> None:
    status, headers, body = http_get(plane_process.url + "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert "Content-Security-Policy" not in headers


# -- sign-in and the token ------------------------------------------------------------------


def test_token_stays_out_of_urls_and_logs(
    plane_process: PlaneProcess, browser: WebDriver, screenshots: Screenshots
) -> None:
    token = plane_process.tokens[Role.VIEWER]
    sign_in(browser, plane_process, Role.VIEWER)
    wait_loaded(browser, "Clusters")
    screenshots.take(browser, "signed-in")
    assert browser.execute_script("return sessionStorage.getItem('temper.plane.token')") == token
    assert token not in browser.current_url
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    assert resources, "the page fetched nothing"
    assert [name for name in resources if token in name] == []
    assert [name for name in resources if not name.startswith(plane_process.url + "/")] == []
    assert token not in plane_process.log_path.read_text()

    browser.find_element(By.ID, "sign-out").click()
    wait_until(browser, lambda d: d.find_element(By.ID, "token-input").is_displayed(), "sign-in")
    assert browser.execute_script("return sessionStorage.getItem('temper.plane.token')") is None
    assert_no_error_shown(browser)
    assert_no_console_errors(browser)


def test_unknown_token_shows_401_message(
    plane_process: PlaneProcess, browser: WebDriver, screenshots: Screenshots
) -> None:
    token_input = open_sign_in_form(browser, plane_process)
    token_input.send_keys("temper_0000_not-a-token", Keys.ENTER)
    alert = wait_for_text(browser, By.ID, "alert", "the sign-in error")
    screenshots.take(browser, "rejected")
    assert "401" in alert
    assert "unknown bearer token" in alert
    assert not browser.find_element(By.ID, "main-nav").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('temper.plane.token')") is None
    assert_no_console_errors(browser)


# -- explorer -------------------------------------------------------------------------------


def test_explorer_navigates_to_pods_with_tier_and_layer(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_namespace: str,
    ui_node: str,
) -> None:
    create_pod(core_api, ui_namespace, "db-0", ui_node, priority_class="temper-critical")
    create_pod(
        core_api, ui_namespace, "batch-0", ui_node, priority_class="temper-low", cpu_limit="500m"
    )
    sign_in(browser, plane_process, Role.VIEWER)
    wait_loaded(browser, "Clusters")
    assert row_cells(browser, "local")[0] == "local"
    screenshots.take(browser, "clusters")

    open_view(browser, "Nodes")
    click(browser, By.LINK_TEXT, ui_node, f"the link to node {ui_node}")
    wait_loaded(browser, "node")
    assert browser.find_element(By.CSS_SELECTOR, "#main h1").text == f"Node {ui_node}"
    assert "scx_layered" in browser.find_element(By.ID, "node-summary").text
    critical_load = row_cells(browser, "critical")
    assert critical_load[:2] == ["critical", "1"]

    batch = row_cells(browser, f"{ui_namespace}/batch-0")
    database = row_cells(browser, f"{ui_namespace}/db-0")
    screenshots.take(browser, "node")
    # Columns: pod, namespace, phase, tier, layer, CPU limit, owner.
    assert batch[3:6] == ["low", "low-limited", "500m"]
    assert database[3:6] == ["critical", "critical", "none"]

    click(browser, By.LINK_TEXT, "batch-0", "the link to pod batch-0")
    wait_loaded(browser, "pod")
    assert browser.find_element(By.CSS_SELECTOR, "#main h1").text == f"Pod {ui_namespace}/batch-0"
    pod_facts = facts_of(browser, "pod-summary")
    screenshots.take(browser, "pod")
    assert pod_facts["Node"] == ui_node
    assert pod_facts["Tier"] == "low"
    assert pod_facts["PriorityClass"].startswith("temper-low (value ")
    assert pod_facts["Layer (agent rules)"] == "low-limited"
    # No agent runs for this Node, so the plane cannot read its layer config.
    assert pod_facts["Layer (agent config)"].startswith("unknown: ")
    # Columns: container, kind, image, CPU request, CPU limit, memory request, memory limit.
    assert row_cells(browser, "app")[:5] == [
        "app", "app", "registry.invalid/app:1", "100m", "500m",
    ]  # fmt: skip
    performance = wait_for_text(
        browser,
        By.ID,
        "performance-content",
        "the performance panel's answer",
        lambda text: text.startswith("Not available"),
    )
    assert "502" in performance
    assert "agent" in performance

    click(browser, By.CSS_SELECTOR, "#pod-manifest summary", "the manifest's summary")
    manifest = wait_for_text(
        browser,
        By.CSS_SELECTOR,
        "#pod-manifest pre",
        "the pod's manifest",
        lambda text: text.startswith("{"),
    )
    assert json.loads(manifest)["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "500m"}
    assert_no_error_shown(browser)
    assert_no_console_errors(browser)


def create_deployment_history(
    api_client: k8s.ApiClient, namespace: str, node: str
) -> tuple[str, str]:
    """Create Deployment web, the two ReplicaSets its controller would have made (images web:1
    and web:2) and one pod of revision 2 on ``node``. Return the ReplicaSet and pod names.

    No kube-controller-manager runs, so nothing changes these objects afterwards.
    """
    apps = k8s.AppsV1Api(api_client)
    core = k8s.CoreV1Api(api_client)

    def template(image: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": image}]},
        }

    app_labels = {"app": "web"}
    deployment = apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {
                "name": "web",
                "annotations": {"deployment.kubernetes.io/revision": "2"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": app_labels},
                "template": template("registry.invalid/web:2", app_labels),
            },
        },
    )
    replica_set = None
    for revision, template_hash in ((1, "5d8f7c9b4"), (2, "7f6c8d5b9")):
        labels = {**app_labels, "pod-template-hash": template_hash}
        replica_set = apps.create_namespaced_replica_set(
            namespace,
            {
                "metadata": {
                    "name": f"web-{template_hash}",
                    "labels": labels,
                    "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": "web",
                            "uid": deployment.metadata.uid,
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": 1 if revision == 2 else 0,
                    "selector": {"matchLabels": labels},
                    "template": template(f"registry.invalid/web:{revision}", labels),
                },
            },
        )
    assert replica_set is not None
    pod_name = f"{replica_set.metadata.name}-x7k2p"
    manifest = pod_manifest(pod_name)
    manifest["metadata"]["labels"] = replica_set.spec.selector.match_labels
    manifest["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": replica_set.metadata.name,
            "uid": replica_set.metadata.uid,
            "controller": True,
        }
    ]
    manifest["spec"]["nodeName"] = node
    core.create_namespaced_pod(namespace, manifest)
    return replica_set.metadata.name, pod_name


def test_workload_history_diff_and_restart(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    api_client: k8s.ApiClient,
    ui_namespace: str,
    ui_node: str,
) -> None:
    replica_set, pod = create_deployment_history(api_client, ui_namespace, ui_node)
    sign_in(browser, plane_process, Role.OPERATOR)
    browser.get(f"{plane_process.url}/ui/#/pods/{ui_namespace}/{pod}")
    wait_loaded(browser, "pod")
    owners = facts_of(browser, "pod-summary")["Owners"]
    assert owners == f"ReplicaSet {replica_set} → Deployment web"
    click(browser, By.LINK_TEXT, "Deployment web", "the link to Deployment web")
    wait_loaded(browser, "workload")
    assert browser.find_element(By.CSS_SELECTOR, "#main h1").text == (
        f"Deployment {ui_namespace}/web"
    )
    # Columns: revision, object, created, change cause, replicas, current.
    assert row_cells(browser, "1")[5] == ""
    assert row_cells(browser, "2")[5] == "current"
    diff = wait_until(browser, lambda d: d.find_element(By.ID, "revision-diff"), "the diff")
    removed = [line.text for line in diff.find_elements(By.CSS_SELECTOR, ".removed")]
    added = [line.text for line in diff.find_elements(By.CSS_SELECTOR, ".added")]
    screenshots.take(browser, "history")
    assert removed == ["-  - image: registry.invalid/web:1"]
    assert added == ["+  - image: registry.invalid/web:2"]

    click(browser, By.CSS_SELECTOR, "#workload-manifest summary", "the manifest's summary")
    manifest = wait_for_text(
        browser,
        By.CSS_SELECTOR,
        "#workload-manifest pre",
        "the Deployment's manifest",
        lambda text: text.startswith("{"),
    )
    assert json.loads(manifest)["metadata"]["annotations"] == {
        "deployment.kubernetes.io/revision": "2"
    }

    browser.find_element(By.XPATH, "//button[normalize-space()='Rollout restart']").click()
    dialog = wait_until(
        browser,
        lambda d: (
            d.find_element(By.ID, "confirm-dialog").is_displayed()
            and d.find_element(By.ID, "confirm-dialog")
        ),
        "the confirmation dialog",
    )
    screenshots.take(browser, "confirm-restart")
    assert dialog.find_element(By.ID, "confirm-title").text == (
        f"Restart Deployment {ui_namespace}/web?"
    )
    dialog.find_element(By.ID, "confirm-ok").click()
    status = wait_for_text(
        browser, By.ID, "status", "the restart's result", lambda text: "requested at" in text
    )
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("web", ui_namespace)
    restarted_at = deployment.spec.template.metadata.annotations[
        "kubectl.kubernetes.io/restartedAt"
    ]
    assert status == (
        f"Rollout restart of Deployment {ui_namespace}/web requested at {restarted_at}."
    )
    assert_no_error_shown(browser)
    assert_no_console_errors(browser)


def test_node_view_follows_changes_without_reload(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_namespace: str,
    ui_node: str,
) -> None:
    pods_path = f"/api/v1/nodes/{ui_node}/pods"
    count_pod_fetches = (
        "return performance.getEntriesByType('resource')"
        f".filter((entry) => entry.name.endsWith('{pods_path}')).length"
    )
    sign_in(browser, plane_process, Role.VIEWER)
    open_node(browser, plane_process, ui_node)
    wait_until(
        browser,
        lambda d: d.find_element(By.ID, "live-state").text == "Live updates on",
        "the event stream to connect",
    )
    # The view loads once, and once more when the stream connects, because changes in
    # between would be missed. After that, changes must come through the stream.
    wait_until(browser, lambda d: d.execute_script(count_pod_fetches) == 2, "the reload")
    browser.execute_script("window.uiTestMarker = 'same page'")

    core_api.patch_node(ui_node, {"spec": {"unschedulable": True}})
    wait_until(
        browser,
        lambda d: "cordoned" in d.find_element(By.ID, "node-summary").text,
        "the cordon made through the API server",
    )
    create_pod(core_api, ui_namespace, "late-0", ui_node, priority_class="temper-high")
    late = row_cells(browser, f"{ui_namespace}/late-0")
    screenshots.take(browser, "live")
    # Columns: pod, namespace, phase, tier, layer.
    assert late[3:5] == ["high", "high"]
    core_api.delete_namespaced_pod("late-0", ui_namespace, grace_period_seconds=0)
    wait_until(
        browser,
        lambda d: not d.find_elements(By.CSS_SELECTOR, f'tr[data-key="{ui_namespace}/late-0"]'),
        "the deleted pod to leave the table",
    )
    assert browser.execute_script("return window.uiTestMarker") == "same page"
    assert browser.execute_script(count_pod_fetches) == 2
    assert_no_error_shown(browser)
    assert_no_console_errors(browser)


@contextmanager
def kubelet_in_thread(workdir: Path, lines: list[str]) -> Iterator[FakeKubelet]:
    """Run the fake kubelet on its own event loop in a thread, since Selenium's calls block
    this one."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    kubelets: list[FakeKubelet] = []
    stop = asyncio.Event()

    async def serve() -> None:
        async with FakeKubelet(workdir, lines, interval_seconds=0.2) as kubelet:
            kubelets.append(kubelet)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the fake kubelet did not start"
        yield kubelets[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def test_pod_logs_show_tail_and_follow(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_namespace: str,
    ui_node: str,
    tmp_path: Path,
) -> None:
    lines = [f"line {n}" for n in range(1, 6)]
    with kubelet_in_thread(tmp_path, lines) as kubelet:
        # The API server fetches container logs from the kubelet the Node's status names.
        point_node_at_kubelet(core_api, ui_node, kubelet.port)
        create_pod(core_api, ui_namespace, "logger", ui_node)
        sign_in(browser, plane_process, Role.VIEWER)
        browser.get(f"{plane_process.url}/ui/#/pods/{ui_namespace}/logger")
        wait_loaded(browser, "pod")

        tail = browser.find_element(By.ID, "log-tail")
        tail.clear()
        tail.send_keys("2")
        click(browser, By.XPATH, "//button[normalize-space()='Show log']", "Show log")
        wait_until(
            browser,
            lambda d: d.find_element(By.ID, "log-state").text == "End of the log of app.",
            "the end of the log",
        )
        assert browser.find_element(By.ID, "log-output").text == "line 4\nline 5"

        tail.clear()
        tail.send_keys("1")
        browser.find_element(By.ID, "log-follow").click()
        click(browser, By.XPATH, "//button[normalize-space()='Show log']", "Show log")
        wait_until(
            browser,
            lambda d: "tick 2" in d.find_element(By.ID, "log-output").text,
            "followed lines",
        )
        assert browser.find_element(By.ID, "log-state").text == "Following the log of app."
        screenshots.take(browser, "following")
        click(browser, By.XPATH, "//button[normalize-space()='Stop following']", "Stop")
        wait_until(
            browser,
            lambda d: d.find_element(By.ID, "log-state").text == "Stopped following app.",
            "the stop",
        )
        followed = browser.find_element(By.ID, "log-output").text.splitlines()
        assert followed[:3] == ["line 5", "tick 1", "tick 2"]
        # Stopping closes the browser's request; the plane and the API server close theirs.
        wait_for(kubelet.follow_ended.is_set, timeout_seconds=30)
        assert "follow=true" in kubelet.requests[-1]
        assert_no_error_shown(browser)
        assert_no_console_errors(browser)


FAKE_TRACE = "# tracer: nop\n#\n  worker-101 [000] .... 1.000000: sched_switch: fake\n"


class FakeAgentHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/observe``, ``/config`` and ``/trace`` as a node agent would, for one pod:
    thread counters from tests/observesnapshots.py, a layer config whose ``normal`` layer
    matches the pod's cgroup, and a fixed text as the trace."""

    pod: FakePod
    started_seconds: float
    trace_requests: list[str]

    def do_GET(self) -> None:
        if self.path.startswith("/trace?"):
            self.trace_requests.append(self.path)
            data = FAKE_TRACE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Disposition", 'attachment; filename="fake.trace.txt"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path == "/observe":
            body: Any = snapshot_body([self.pod], time.time(), self.started_seconds)
        elif self.path == "/config":
            cgroup = f"kubepods.slice/pod{self.pod.uid}/"
            body = {
                "scheduler": "scx_layered",
                "layers": [
                    {"name": "normal", "matches": [[{"CgroupPrefix": cgroup}]]},
                    {"name": "background", "matches": [[]]},
                ],
            }
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the per-request log lines that the base class writes to stderr."""


def test_performance_panel_and_trace_download(
    control_plane: LocalControlPlane,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_namespace: str,
    ui_node: str,
    tmp_path: Path,
) -> None:
    create_pod(core_api, ui_namespace, "busy", ui_node)
    uid = core_api.read_namespaced_pod("busy", ui_namespace).metadata.uid
    threads = [FakeThread(101, "worker", cpu_cores=0.5), FakeThread(102, "idle", cpu_cores=0.01)]
    trace_requests: list[str] = []
    handler = type(
        "Agent",
        (FakeAgentHandler,),
        {
            "pod": FakePod(ui_namespace, "busy", uid, threads),
            "started_seconds": time.time() - 10,
            "trace_requests": trace_requests,
        },
    )
    agent = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=agent.serve_forever, daemon=True)
    thread.start()
    template = f"http://127.0.0.1:{agent.server_address[1]}"
    try:
        with running_plane(
            control_plane, tmp_path / "plane", ui_namespace, "--agent-url-template", template
        ) as plane:
            sign_in(browser, plane, Role.OPERATOR)
            browser.get(f"{plane.url}/ui/#/pods/{ui_namespace}/busy")
            wait_loaded(browser, "pod")
            worker = row_cells(browser, "101")
            idle = row_cells(browser, "102")
            performance = facts_of(browser, "performance-content")
            pod_facts = facts_of(browser, "pod-summary")
            screenshots.take(browser, "performance")

            open_node(browser, plane, ui_node)
            browser.find_element(By.ID, "trace-seconds").send_keys("0.5")
            click(
                browser, By.XPATH, "//button[normalize-space()='Download scheduler trace']", "trace"
            )
            status = wait_for_text(
                browser, By.ID, "status", "the trace download", lambda text: "downloaded" in text
            )
            downloaded = tmp_path / "downloads" / "fake.trace.txt"
            wait_for(downloaded.is_file, timeout_seconds=30)
            assert_no_error_shown(browser)
            assert_no_console_errors(browser)
    finally:
        agent.shutdown()
        agent.server_close()
        thread.join(10)
    # Threads are sorted by CPU time. Columns: thread, container, CPU time.
    assert worker[:2] == ["worker (101)", "app"]
    assert idle[:2] == ["idle (102)", "app"]
    assert float(worker[2].removesuffix(" s")) > float(idle[2].removesuffix(" s"))
    assert performance["Agent"] == f"{template}/observe"
    assert pod_facts["Layer (agent rules)"] == "normal"
    assert pod_facts["Layer (agent config)"] == "normal (matched by cgroup)"
    assert trace_requests == ["/trace?seconds=0.5"]
    assert status == f"Scheduler trace of {ui_node} downloaded ({len(FAKE_TRACE)} bytes)."
    assert downloaded.read_text() == FAKE_TRACE


# -- actions --------------------------------------------------------------------------------


def test_operator_cordon_shows_node_and_audit_entry(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_node: str,
) -> None:
    sign_in(browser, plane_process, Role.OPERATOR)
    open_node(browser, plane_process, ui_node)
    assert facts_of(browser, "node-summary")["State"] == "schedulable"
    click(browser, By.XPATH, "//button[normalize-space()='Cordon']", "the Cordon button")
    wait_until(
        browser,
        lambda d: "cordoned" in d.find_element(By.ID, "node-summary").text,
        "the node shown as cordoned",
    )
    screenshots.take(browser, "cordoned")
    assert browser.find_element(By.ID, "status").text == f"Node {ui_node} cordoned."
    assert browser.find_elements(By.XPATH, "//button[normalize-space()='Uncordon']")
    assert core_api.read_node(ui_node).spec.unschedulable is True

    browser.find_element(By.ID, "sign-out").click()
    sign_in(browser, plane_process, Role.ADMIN)
    open_view(browser, "Audit")
    cordon_path = f"POST /api/v1/nodes/{ui_node}/cordon"
    cells = wait_until(
        browser,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#audit-list tbody tr')]"
            ".map((row) => [...row.querySelectorAll('th, td')].map((cell) => cell.innerText))"
            ".find((cells) => cells[4] === arguments[0]) ?? null",
            cordon_path,
        ),
        "the cordon entry in the audit view",
    )
    screenshots.take(browser, "audit")
    # Columns: sequence, time, token, role, request, operation, outcome, detail.
    assert cells[2:7] == ["ui-operator", "operator", cordon_path, "cordonNode", "allowed 200"]
    assert_no_error_shown(browser)
    assert_no_console_errors(browser)


def confirm_dialog(driver: WebDriver, title: str) -> None:
    """Wait for the confirmation dialog, check its title and confirm."""
    dialog = wait_until(
        driver,
        lambda d: (
            d.find_element(By.ID, "confirm-dialog").is_displayed()
            and d.find_element(By.ID, "confirm-dialog")
        ),
        f"the dialog {title!r}",
    )
    assert dialog.find_element(By.ID, "confirm-title").text == title
    dialog.find_element(By.ID, "confirm-ok").click()


def test_operator_safe_mode_and_drain(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_namespace: str,
    ui_node: str,
) -> None:
    create_pod(core_api, ui_namespace, "drained-0", ui_node)
    sign_in(browser, plane_process, Role.OPERATOR)
    open_node(browser, plane_process, ui_node)

    click(browser, By.XPATH, "//button[normalize-space()='Request safe mode']", "safe mode")
    confirm_dialog(browser, f"Request safe mode on {ui_node}?")
    wait_until(
        browser,
        lambda d: "safe mode requested" in facts_of(d, "node-summary")["State"],
        "the node shown in safe mode",
    )
    node_annotations = core_api.read_node(ui_node).metadata.annotations
    assert node_annotations[annotations.SAFE_MODE_REQUESTED] == "true"
    click(browser, By.XPATH, "//button[normalize-space()='Resume enforcement']", "resume")
    wait_until(
        browser,
        lambda d: "safe mode" not in facts_of(d, "node-summary")["State"],
        "the node shown without safe mode",
    )
    node_annotations = core_api.read_node(ui_node).metadata.annotations or {}
    assert annotations.SAFE_MODE_REQUESTED not in node_annotations

    browser.find_element(By.ID, "drain-grace").send_keys("0")
    browser.find_element(By.ID, "drain-timeout").send_keys("5")
    click(browser, By.XPATH, "//button[normalize-space()='Drain']", "the Drain button")
    confirm_dialog(browser, f"Drain {ui_node}?")
    status = wait_for_text(
        browser,
        By.ID,
        "status",
        "the drain's result",
        lambda text: text.startswith(f"Drain of {ui_node} "),
    )
    screenshots.take(browser, "drained")
    assert status.endswith(": 1 evicted, 0 blocked, 0 failed, 0 skipped.")
    assert row_cells(browser, f"{ui_namespace}/drained-0")[0] == f"{ui_namespace}/drained-0"
    assert facts_of(browser, "node-summary")["State"] == "cordoned"
    assert core_api.read_node(ui_node).spec.unschedulable is True
    wait_until(
        browser,
        lambda d: (
            not d.find_elements(
                By.CSS_SELECTOR, f'#node-pods tr[data-key="{ui_namespace}/drained-0"]'
            )
        ),
        "the evicted pod to leave the node's pods",
    )
    assert_no_error_shown(browser)
    assert_no_console_errors(browser)


def test_viewer_cordon_shows_403_message(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_node: str,
) -> None:
    sign_in(browser, plane_process, Role.VIEWER)
    open_node(browser, plane_process, ui_node)
    click(browser, By.XPATH, "//button[normalize-space()='Cordon']", "the Cordon button")
    alert = wait_for_text(browser, By.ID, "alert", "the error message")
    screenshots.take(browser, "denied")
    assert alert.startswith(f"Cordon node {ui_node} failed: 403 ")
    assert "role viewer may not cordonNode: it requires role operator or above" in alert
    assert facts_of(browser, "node-summary")["State"] == "schedulable"
    assert not core_api.read_node(ui_node).spec.unschedulable
    assert_no_console_errors(browser)


def test_viewer_audit_view_shows_403(
    plane_process: PlaneProcess, browser: WebDriver, screenshots: Screenshots
) -> None:
    sign_in(browser, plane_process, Role.VIEWER)
    wait_loaded(browser, "Clusters")
    nav = browser.find_element(By.ID, "main-nav")
    assert nav.find_elements(By.LINK_TEXT, "Audit") == [], "viewers get no Audit link"
    browser.get(plane_process.url + "/ui/#/audit")
    alert = wait_for_text(browser, By.ID, "alert", "the error message")
    screenshots.take(browser, "audit-denied")
    assert "403" in alert
    assert "requires role admin" in alert
    assert browser.find_elements(By.CSS_SELECTOR, "#audit-list tbody tr") == []
    assert_no_console_errors(browser)


# -- savings --------------------------------------------------------------------------------


def test_savings_view_shows_realized_and_opportunity(
    plane_process: PlaneProcess,
    browser: WebDriver,
    screenshots: Screenshots,
    core_api: k8s.CoreV1Api,
    ui_namespace: str,
    ui_node: str,
) -> None:
    # Realized: the webhook lowered 400m to 100m. Opportunity: 1 CPU requested, 250m advised.
    original = OriginalRequests(containers={"app": "400m"}).encode()
    create_pod(
        core_api, ui_namespace, "reclaimed", ui_node,
        pod_annotations={annotations.ORIGINAL_REQUESTS: original},
    )  # fmt: skip
    recommendation = json.dumps(
        {"v": 1, "status": "proposed", "ts": 1_700_000_000, "containers": {"app": {"req_m": 250}}}
    )
    create_pod(
        core_api, ui_namespace, "oversized", ui_node, cpu_request="1",
        pod_annotations={annotations.RECOMMENDATION: recommendation},
    )  # fmt: skip

    sign_in(browser, plane_process, Role.VIEWER)
    open_view(browser, "Savings")
    browser.find_element(By.ID, "savings-namespace").send_keys(ui_namespace, Keys.ENTER)
    wait_until(
        browser,
        lambda d: "oversized" in d.find_element(By.ID, "savings-report").text,
        "the savings of the test namespace",
    )
    screenshots.take(browser, "savings")

    report = browser.find_element(By.ID, "savings-report").text
    assert "Prices in EUR" in report
    realized = browser.find_element(By.ID, "savings-realized").text
    opportunity = browser.find_element(By.ID, "savings-opportunity").text
    # 300m at 0.04 EUR per core-hour for 730 hours: 8.76 EUR; 750m: 21.90 EUR.
    assert "300m CPU, 8.76 EUR a month" in realized
    assert "750m CPU, 21.90 EUR a month" in opportunity
    reclaimed = row_cells(browser, f"{ui_namespace}/Pod/reclaimed")
    oversized = row_cells(browser, f"{ui_namespace}/Pod/oversized")
    # Columns: workload, namespace, realized CPU, realized a month, opportunity CPU,
    # opportunity a month, recommendation.
    assert reclaimed[2:4] == ["300m", "8.76 EUR"]
    assert oversized[4:7] == ["750m", "21.90 EUR", "proposed"]
    assert_no_error_shown(browser)
    assert_no_console_errors(browser)


# -- hub --------------------------------------------------------------------------------------


def http_json(method: str, url: str, token: str, body: Any) -> tuple[int, Any]:
    """Send ``body`` as JSON with a bearer token; return the status and decoded response."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_hub_lists_peer_clusters(
    control_plane: LocalControlPlane,
    browser: WebDriver,
    screenshots: Screenshots,
    ui_namespace: str,
    ui_node: str,
    tmp_path: Path,
) -> None:
    closed_port = free_port()
    with (
        running_plane(control_plane, tmp_path / "peer", ui_namespace) as peer,
        running_plane(
            control_plane, tmp_path / "hub", ui_namespace,
            "--hub-enabled", "--hub-key-path", str(tmp_path / "hub.key"),
        ) as hub,
    ):  # fmt: skip
        admin = hub.tokens[Role.ADMIN]
        status, body = http_json(
            "PUT", f"{hub.url}/api/v1/hub/peers/east", admin,
            {"url": peer.url, "token": peer.tokens[Role.VIEWER]},
        )  # fmt: skip
        assert status == 200, body
        status, body = http_json(
            "PUT", f"{hub.url}/api/v1/hub/peers/west", admin,
            {"url": f"http://127.0.0.1:{closed_port}", "token": "temper_0_x", "verify": False},
        )  # fmt: skip
        assert status == 200, body

        sign_in(browser, hub, Role.VIEWER)
        wait_loaded(browser, "Clusters")
        east = row_cells(browser, "east")
        west = row_cells(browser, "west")
        local = row_cells(browser, "local")
        screenshots.take(browser, "hub")
        # Columns: cluster, status, address, latency, nodes.
        assert local[:3] == ["local this plane", "reachable", "\N{EN DASH}"]
        assert east[:3] == ["east", "reachable", peer.url]
        assert int(east[4]) >= 1, "the peer's summary counts the test's Node"
        assert west[1].startswith("unreachable ")
        assert f"127.0.0.1:{closed_port}" in west[1]

        open_view(browser, "Savings")
        # Columns: cluster, status, realized CPU, realized a month.
        east_savings = row_cells(browser, "east")
        west_savings = row_cells(browser, "west")
        local_savings = row_cells(browser, "local")
        screenshots.take(browser, "hub-savings")
        assert local_savings[:2] == ["local (this plane)", "reachable"]
        assert east_savings[:2] == ["east", "reachable"]
        # Both planes price with the module's table.
        assert east_savings[3].endswith(" EUR")
        assert west_savings[1].startswith("unreachable ")
        assert_no_error_shown(browser)
        assert_no_console_errors(browser)


# -- accessibility ----------------------------------------------------------------------------


def test_keyboard_reaches_views_and_every_input_has_label(
    plane_process: PlaneProcess, browser: WebDriver, screenshots: Screenshots
) -> None:
    open_sign_in_form(browser, plane_process)
    # The signed-out page focuses the token input; the skip link comes before it.
    assert browser.switch_to.active_element.get_attribute("id") == "token-input"
    browser.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "token-input"
    active.send_keys(plane_process.tokens[Role.ADMIN], Keys.ENTER)
    wait_loaded(browser, "Clusters")

    # Focus is on the view's heading; Shift+Tab walks back through the navigation.
    focused: list[str] = []
    for _ in range(10):
        browser.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
        focused.append(browser.switch_to.active_element.text)
        if focused[-1] == "Nodes":
            break
    assert focused[-1] == "Nodes", f"Shift+Tab did not reach the Nodes link: {focused}"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_loaded(browser, "Nodes")
    heading = browser.find_element(By.CSS_SELECTOR, "#main h1")
    assert heading.text == "Nodes"
    assert browser.switch_to.active_element == heading
    current = browser.find_element(By.CSS_SELECTOR, "#main-nav [aria-current='page']")
    assert current.text == "Nodes"
    screenshots.take(browser, "keyboard")

    for view in ("Clusters", "Nodes", "Workloads", "Savings", "Audit"):
        open_view(browser, view)
        unlabelled = browser.execute_script(
            "return [...document.querySelectorAll('input, select, textarea')]"
            ".filter((field) => field.labels.length === 0).map((field) => field.id)"
        )
        assert unlabelled == [], view
        unnamed = browser.execute_script(
            "return [...document.querySelectorAll('button')]"
            ".filter((button) => !button.textContent.trim()).length"
        )
        assert unnamed == 0, view
    assert_no_console_errors(browser)
