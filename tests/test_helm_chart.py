"""The Helm chart deploy/helm/temper, checked by the real helm and the real kube-apiserver.

`helm lint` and `helm template` run for a matrix of values. The API server validates every
rendered object through a server-side apply with dryRun=All and fieldValidation=Strict; the
CRD kinds (ServiceMonitor, cert-manager Issuer and Certificate) do not exist on the test API
server, so their rendered YAML is checked instead. A module-wide `helm install` into the
namespace `temper` is then the base for the RBAC checks (SubjectAccessReviews as each
ServiceAccount) and for running the agent, the extender, kube-scheduler and the webhook
with the tokens of their ServiceAccounts, so each component shows that its permissions are
enough.
"""

import base64
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from kubernetes import client as k8s

from agent.settings import AgentSettings
from extender.settings import ExtenderSettings
from plane.prices import parse_price_table
from plane.settings import PlaneSettings
from plane.store import Role, Store
from temper import settings as settings_tree
from temper.controlplane import LocalControlPlane, find_binaries
from temper.controlplane.binaries import KUBERNETES_VERSION
from temper.controlplane.client import AdminClient, JsonObject
from temper.controlplane.process import ManagedProcess, free_port
from temper.errors import KubernetesError
from temper.service import ServiceSettings
from temper.tiers import priority_class_manifests
from tests.agentproc import running_agent
from tests.kubehelpers import bound_node, create_nodes, delete_nodes, pod_manifest, wait_for
from webhook.registration import (
    CONFIGURATION_NAME,
    ServiceReference,
    webhook_configuration_manifest,
)
from webhook.settings import WebhookSettings

pytestmark = pytest.mark.controlplane

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "temper"
RELEASE = "temper"
NAMESPACE = "temper"
FIELD_MANAGER = "temper-test"
# Kinds defined by CRDs that the test API server does not have.
CRD_KINDS = frozenset({"ServiceMonitor", "Certificate", "Issuer"})
PRIORITY_CLASSES_PATH = "/apis/scheduling.k8s.io/v1/priorityclasses"
WEBHOOK_HOST = "temper-webhook.temper.svc"
SELF_REGISTRATION_URL = "https://temper-webhook.example.test:8443/mutate"

AGENT_ACCOUNT = "temper-agent"
EXTENDER_ACCOUNT = "temper-extender"
SCHEDULER_ACCOUNT = "temper-scheduler"
WEBHOOK_ACCOUNT = "temper-webhook"
PLANE_ACCOUNT = "temper-plane"

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "extender": ["extender.enabled=true"],
    "webhook-generated-certificate": ["webhook.enabled=true"],
    "webhook-cert-manager": ["webhook.enabled=true", "webhook.certManager.enabled=true"],
    "webhook-cert-manager-cluster-issuer": [
        "webhook.enabled=true",
        "webhook.certManager.enabled=true",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
        "webhook.certManager.issuerRef.name=company-ca",
    ],
    "webhook-self-registration": [
        "webhook.enabled=true",
        "webhook.selfRegistration.enabled=true",
        f"webhook.selfRegistration.url={SELF_REGISTRATION_URL}",
    ],
    "stock-kernel-mode": ["agent.stockKernelMode=true"],
    "service-monitor": ["monitoring.serviceMonitor.enabled=true", "extender.enabled=true"],
    "agent-capabilities": ["agent.privileged=false", "agent.bccHostMounts=false"],
    "no-network-policies": ["networkPolicy.enabled=false", "priorityClasses.create=false"],
    "plane": ["plane.enabled=true"],
    "plane-hub-prices-emptydir": [
        "plane.enabled=true",
        "plane.hub.enabled=true",
        "plane.hub.allowedPeers={plane.east.example.test}",
        "plane.persistence.enabled=false",
        "plane.evictionGracePeriodSeconds=30",
        "plane.prices.machineTypes.n2-standard-8.cpuCoreHour=0.0475",
        "plane.prices.machineTypes.n2-standard-8.nodeHour=0.38",
        "plane.prices.default.cpuCoreHour=0.05",
        "plane.prices.default.nodeHour=0.4",
    ],
}
INSTALLED_VALUES = [
    "extender.enabled=true",
    "webhook.enabled=true",
    "plane.enabled=true",
    "plane.hub.enabled=true",
]


# -- helm ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Helm:
    """The real helm binary with its cache, config and data in a private directory."""

    binary: Path
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        environment = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            check=False,
        )

    def template(
        self, values: list[str], kube_version: str = KUBERNETES_VERSION
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kube_version,
            *set_flags(values),
        )

    def render(self, values: list[str], kube_version: str = KUBERNETES_VERSION) -> list[JsonObject]:
        result = self.template(values, kube_version)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return [document for document in yaml.safe_load_all(result.stdout) if document]


def set_flags(values: list[str]) -> list[str]:
    return [flag for value in values for flag in ("--set", value)]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(find_binaries().helm, tmp_path_factory.mktemp("helm-home"))


def find(objects: list[JsonObject], kind: str, name: str | None = None) -> list[JsonObject]:
    return [
        item
        for item in objects
        if item["kind"] == kind and (name is None or item["metadata"]["name"] == name)
    ]


def only(objects: list[JsonObject], kind: str, name: str | None = None) -> JsonObject:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
    return found[0]


def container_env(workload: JsonObject) -> dict[str, str]:
    """Plain env values of the first container; downward-API values become placeholders."""
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", f"<{variable['name']}>")
    return env


# -- API server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(control_plane: LocalControlPlane) -> AdminClient:
    return control_plane.admin_client()


@pytest.fixture(scope="module")
def temper_namespace(admin: AdminClient) -> str:
    """The namespace `temper`; other tests may have created it, and no test deletes it."""
    try:
        admin.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    except KubernetesError as error:
        if error.status != 409:
            raise
    return NAMESPACE


class Discovery:
    """Maps apiVersion and kind to the REST path, from the API server's discovery documents."""

    def __init__(self, admin: AdminClient) -> None:
        self._admin = admin
        self._resources: dict[str, dict[str, JsonObject]] = {}

    def path(self, manifest: JsonObject) -> str:
        api_version = manifest["apiVersion"]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if api_version not in self._resources:
            listing = self._admin.get(base)["resources"]
            self._resources[api_version] = {
                item["kind"]: item for item in listing if "/" not in item["name"]
            }
        resource = self._resources[api_version][manifest["kind"]]
        metadata = manifest["metadata"]
        if resource["namespaced"]:
            base += f"/namespaces/{metadata['namespace']}"
        return f"{base}/{resource['name']}/{metadata['name']}"


@pytest.fixture(scope="module")
def discovery(admin: AdminClient) -> Discovery:
    return Discovery(admin)


def dry_run_apply(admin: AdminClient, discovery: Discovery, manifest: JsonObject) -> JsonObject:
    """Server-side apply with dryRun=All: full validation and admission, nothing stored."""
    params = {
        "fieldManager": FIELD_MANAGER,
        "force": "true",
        "fieldValidation": "Strict",
        "dryRun": "All",
    }
    return admin.request(
        "PATCH",
        discovery.path(manifest),
        manifest,
        params=params,
        content_type="application/apply-patch+yaml",
    )


def service_account_kubeconfig(
    control_plane: LocalControlPlane, admin: AdminClient, account: str, directory: Path
) -> Path:
    """A kubeconfig with a token of ``account``, as the pod of that ServiceAccount gets one."""
    review = admin.create(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": control_plane.server,
                    "certificate-authority": str(control_plane.ca_path),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": review["status"]["token"]}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path = directory / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


# -- lint and render ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_lint_passes(helm: Helm, name: str) -> None:
    result = helm.run(
        "lint", str(CHART), "--strict", "--kube-version", KUBERNETES_VERSION,
        *set_flags(VALUE_SETS[name]),
    )  # fmt: skip
    assert result.returncode == 0, f"helm lint failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_api_server_accepts_every_object(
    helm: Helm, admin: AdminClient, discovery: Discovery, temper_namespace: str, name: str
) -> None:
    objects = helm.render(VALUE_SETS[name])
    applied = [item for item in objects if item["kind"] not in CRD_KINDS]
    assert applied
    for manifest in applied:
        stored = dry_run_apply(admin, discovery, manifest)
        assert stored["kind"] == manifest["kind"]
        assert stored["metadata"]["name"] == manifest["metadata"]["name"]


def test_defaults_are_complement_mode(helm: Helm) -> None:
    objects = helm.render([])
    components = {item["metadata"]["labels"]["app.kubernetes.io/component"] for item in objects}
    assert components == {"agent", "priority-classes", "dashboards"}
    assert {item["kind"] for item in objects} == {
        "ConfigMap",
        "PriorityClass",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "NetworkPolicy",
    }


def test_priority_classes_match_core(helm: Helm) -> None:
    rendered = {item["metadata"]["name"]: item for item in find(helm.render([]), "PriorityClass")}
    expected = {item["metadata"]["name"]: item for item in priority_class_manifests()}
    assert rendered.keys() == expected.keys()
    for name, manifest in expected.items():
        for field in ("value", "globalDefault", "preemptionPolicy", "description"):
            assert rendered[name][field] == manifest[field], f"{name}.{field}"
        labels = rendered[name]["metadata"]["labels"]
        assert manifest["metadata"]["labels"].items() <= labels.items(), name


def test_priority_classes_kept_on_uninstall(helm: Helm) -> None:
    for item in find(helm.render([]), "PriorityClass"):
        assert item["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_webhook_configuration_matches_core(helm: Helm) -> None:
    objects = helm.render(["webhook.enabled=true", "webhook.timeoutSeconds=7"])
    rendered = only(objects, "MutatingWebhookConfiguration")
    expected = webhook_configuration_manifest(
        service=ServiceReference(namespace=NAMESPACE, name="temper-webhook")
    )
    assert rendered["metadata"]["name"] == CONFIGURATION_NAME
    [webhook] = rendered["webhooks"]
    [expected_webhook] = expected["webhooks"]
    ca_bundle = webhook["clientConfig"].pop("caBundle")
    assert webhook.pop("timeoutSeconds") == 7
    expected_webhook.pop("timeoutSeconds")
    assert webhook == expected_webhook
    secret = only(objects, "Secret", "temper-webhook-tls")
    assert ca_bundle == secret["data"]["ca.crt"]


def test_generated_certificate_names_the_service(helm: Helm) -> None:
    secret = only(helm.render(["webhook.enabled=true"]), "Secret", "temper-webhook-tls")
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "temper-webhook.temper.svc" in names.get_values_for_type(x509.DNSName)
    serving.verify_directly_issued_by(ca)


def test_cert_manager_certificate_feeds_webhook(helm: Helm) -> None:
    objects = helm.render(VALUE_SETS["webhook-cert-manager"])
    certificate = only(objects, "Certificate")
    deployment = only(objects, "Deployment", "temper-webhook")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert certificate["spec"]["secretName"] == volumes["tls"]["secret"]["secretName"]
    assert "temper-webhook.temper.svc" in certificate["spec"]["dnsNames"]
    issuer = only(objects, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"] == {
        "kind": "Issuer",
        "name": issuer["metadata"]["name"],
    }
    configuration = only(objects, "MutatingWebhookConfiguration")
    annotations = configuration["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/temper-webhook"
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    assert not find(objects, "Secret")


def test_cert_manager_uses_given_issuer(helm: Helm) -> None:
    objects = helm.render(VALUE_SETS["webhook-cert-manager-cluster-issuer"])
    certificate = only(objects, "Certificate")
    assert certificate["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "company-ca"}
    assert not find(objects, "Issuer")


def test_self_registration_replaces_rendered_configuration(helm: Helm) -> None:
    objects = helm.render(VALUE_SETS["webhook-self-registration"])
    assert not find(objects, "MutatingWebhookConfiguration")
    env = container_env(only(objects, "Deployment", "temper-webhook"))
    assert env["TEMPER_WEBHOOK_REGISTER_WEBHOOK_URL"] == SELF_REGISTRATION_URL
    assert env["TEMPER_WEBHOOK_TLS_CA_FILE"].endswith("/ca.crt")
    rules = only(objects, "ClusterRole", "temper-webhook")["rules"]
    assert "mutatingwebhookconfigurations" in {r for rule in rules for r in rule["resources"]}


def test_webhook_reads_only_limitranges_by_default(helm: Helm) -> None:
    objects = helm.render(["webhook.enabled=true"])
    rules = only(objects, "ClusterRole", "temper-webhook")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["limitranges"], "verbs": ["list", "watch"]}]


def test_service_monitors_only_when_enabled(helm: Helm) -> None:
    assert not find(helm.render(["extender.enabled=true"]), "ServiceMonitor")
    objects = helm.render(VALUE_SETS["service-monitor"])
    monitors = find(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"temper-agent", "temper-extender"}
    services = find(objects, "Service")
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matched) == 1, monitor["metadata"]["name"]
        port_names = {port["name"] for port in matched[0]["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in port_names


NEXT_STEPS = {
    "label a namespace for overcommit": "temper.codes/overcommit=enabled",
    "give pods a tier": "priorityClassName: temper-critical",
    "check the node's scheduler": "annotations.temper\\.codes/scheduler",
    "request safe mode": "kubectl annotate namespace temper temper.codes/safe-mode-requested=true",
}


@pytest.mark.parametrize("step", list(NEXT_STEPS))
def test_notes_explain_next_step(helm: Helm, step: str) -> None:
    result = helm.run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert NEXT_STEPS[step] in notes


def test_rightsizer_renders_nothing(helm: Helm) -> None:
    for item in helm.render(VALUE_SETS["service-monitor"] + ["webhook.enabled=true"]):
        assert "rightsizer" not in item["metadata"]["name"]


def test_stock_kernel_mode_reaches_agent(helm: Helm) -> None:
    env = container_env(only(helm.render(VALUE_SETS["stock-kernel-mode"]), "DaemonSet"))
    settings = settings_tree.load(AgentSettings, "agent", environ=env)
    assert settings.stock_kernel_mode is True


def test_agent_mounts_boot_read_only(helm: Helm) -> None:
    """scx_layered reads the kernel config in /boot/config-<release> to load its BPF programs."""
    pod = only(helm.render([]), "DaemonSet")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/boot"]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["hostPath"]["path"] == "/boot"


def test_scheduler_image_follows_cluster_version(helm: Helm) -> None:
    def image(values: list[str], kube_version: str) -> str:
        objects = helm.render(["extender.enabled=true", *values], kube_version)
        pod = only(objects, "Deployment", "temper-scheduler")["spec"]["template"]["spec"]
        return str(pod["containers"][0]["image"])

    assert image([], "v1.37.2-gke.100") == "registry.k8s.io/kube-scheduler:v1.37.2"
    pinned = image(["extender.scheduler.image.tag=v1.36.4"], "v1.37.2")
    assert pinned == "registry.k8s.io/kube-scheduler:v1.36.4"


def test_scheduler_config_points_at_extender(helm: Helm) -> None:
    objects = helm.render(["extender.enabled=true", "extender.weight=7"])
    config = yaml.safe_load(only(objects, "ConfigMap", "temper-scheduler")["data"]["config.yaml"])
    assert config["profiles"] == [{"schedulerName": "temper-scheduler"}]
    assert config["leaderElection"]["leaderElect"] is True
    [extender] = config["extenders"]
    assert extender["urlPrefix"] == "http://temper-extender.temper.svc:8888"
    assert extender["weight"] == 7
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is True
    service = only(objects, "Service", "temper-extender")
    assert service["spec"]["ports"][0]["port"] == 8888


SETTINGS_MODELS: dict[str, tuple[str, type[ServiceSettings]]] = {
    "DaemonSet/temper-agent": ("agent", AgentSettings),
    "Deployment/temper-extender": ("extender", ExtenderSettings),
    "Deployment/temper-webhook": ("webhook", WebhookSettings),
}


@pytest.mark.parametrize("workload", list(SETTINGS_MODELS))
def test_env_names_real_settings(helm: Helm, workload: str) -> None:
    """Every TEMPER_* variable is a field of the component's settings and validates."""
    component, model = SETTINGS_MODELS[workload]
    kind, name = workload.split("/")
    objects = helm.render(["extender.enabled=true", "webhook.enabled=true"])
    rendered = only(objects, kind, name)
    env = container_env(rendered)
    prefix = f"TEMPER_{component.upper()}_"
    fields = {prefix + field.upper() for field in model.model_fields}
    assert set(env) <= fields
    settings = settings_tree.load(model, component, environ=env)
    grace = rendered["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_timeout_seconds


@dataclass(frozen=True)
class InvalidValue:
    """helm flags that set an invalid value, and the text the error must contain."""

    flags: list[str]
    message: str


def invalid(value: str, message: str) -> InvalidValue:
    return InvalidValue(["--set", value], message)


INVALID_VALUES = {
    # --set passes 1.5 as a string; the chart's range check names the value.
    "factor above one": invalid("webhook.factors.normal=1.5", "webhook.factors.normal=1.5"),
    # --set-json passes a number, which values.schema.json checks.
    "factor above one as number": InvalidValue(
        ["--set-json", "webhook.factors.normal=1.5"], "/webhook/factors/normal"
    ),
    "factor zero": invalid("webhook.factors.high=0", "/webhook/factors/high"),
    "factor zero as decimal": invalid("webhook.factors.high=0.0", "webhook.factors.high=0.0"),
    "negative weight": invalid("extender.weight=-1", "/extender/weight"),
    "unknown key": invalid("agent.stockKernalMode=true", "stockKernalMode"),
    "unknown cgroup driver": invalid("agent.cgroupDriver=systemdd", "/agent/cgroupDriver"),
    "webhook timeout": invalid("webhook.timeoutSeconds=31", "/webhook/timeoutSeconds"),
    "publish interval": invalid("publishIntervalSeconds=0.5", "publishIntervalSeconds=0.5"),
    "default scheduler name": invalid(
        "extender.scheduler.name=default-scheduler", "/extender/scheduler/name"
    ),
    "plain http url": invalid(
        "webhook.selfRegistration.url=http://webhook.example.test/mutate",
        "/webhook/selfRegistration/url",
    ),
    "missing factor": invalid("webhook.factors.low=null", "low"),
    "short grace period": invalid(
        "agent.terminationGracePeriodSeconds=10", "agent.terminationGracePeriodSeconds"
    ),
    "rightsizer": invalid("rightsizer.enabled=true", "rightsizer.enabled"),
    "self-registration without url": InvalidValue(
        ["--set", "webhook.enabled=true", "--set", "webhook.selfRegistration.enabled=true"],
        "webhook.selfRegistration.url",
    ),
    "plane port": invalid("plane.port=0", "/plane/port"),
    "plane cluster name": invalid("plane.clusterName=Local_1", "/plane/clusterName"),
    "negative price": InvalidValue(
        set_flags(
            [
                "plane.prices.machineTypes.m1.cpuCoreHour=-0.5",
                "plane.prices.machineTypes.m1.nodeHour=1",
            ]
        ),
        "/plane/prices/machineTypes/m1/cpuCoreHour",
    ),
    "missing node price": invalid("plane.prices.machineTypes.m1.cpuCoreHour=1", "nodeHour"),
    "hub peer timeout": InvalidValue(
        ["--set", "plane.enabled=true", "--set", "plane.hub.peerTimeoutSeconds=0.0"],
        "plane.hub.peerTimeoutSeconds=0.0",
    ),
    "plane short grace period": InvalidValue(
        ["--set", "plane.enabled=true", "--set", "plane.terminationGracePeriodSeconds=10"],
        "plane.terminationGracePeriodSeconds",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_VALUES))
def test_template_rejects_invalid_value(helm: Helm, case: str) -> None:
    invalid_value = INVALID_VALUES[case]
    result = helm.run("template", RELEASE, str(CHART), *invalid_value.flags)
    assert result.returncode != 0
    assert invalid_value.message in result.stderr


def test_factor_from_set_reaches_webhook(helm: Helm) -> None:
    objects = helm.render(["webhook.enabled=true", "webhook.factors.normal=0.5"])
    env = container_env(only(objects, "Deployment", "temper-webhook"))
    settings = settings_tree.load(WebhookSettings, "webhook", environ=env)
    assert settings.normal_factor == 0.5


def test_lint_rejects_invalid_factor(helm: Helm) -> None:
    result = helm.run("lint", str(CHART), "--set-json", "webhook.factors.normal=1.5")
    assert result.returncode != 0
    assert "/webhook/factors/normal" in result.stdout + result.stderr


# -- installed release: RBAC and the components under their ServiceAccounts ---------------


@pytest.fixture(scope="module")
def installed(
    helm: Helm,
    control_plane: LocalControlPlane,
    admin: AdminClient,
    temper_namespace: str,
) -> Iterator[None]:
    """`helm install` as a user runs it, with L1 on; `helm uninstall` afterwards.

    --take-ownership adopts PriorityClasses that other tests created without Helm's labels.
    `helm uninstall` keeps the PriorityClasses, so the ones this install created are deleted
    here.
    """
    existing = {item["metadata"]["name"] for item in admin.get(PRIORITY_CLASSES_PATH)["items"]}
    kubeconfig = ["--kubeconfig", str(control_plane.kubeconfig)]
    result = helm.run(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--take-ownership", *set_flags(INSTALLED_VALUES), *kubeconfig,
    )  # fmt: skip
    assert result.returncode == 0, f"helm install failed:\n{result.stderr}"
    try:
        yield
    finally:
        result = helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, *kubeconfig)
        assert result.returncode == 0, f"helm uninstall failed:\n{result.stderr}"
        for manifest in priority_class_manifests():
            name = manifest["metadata"]["name"]
            if name not in existing:
                admin.request("DELETE", f"{PRIORITY_CLASSES_PATH}/{name}")


def test_install_uses_cluster_scheduler_version(installed: None, admin: AdminClient) -> None:
    deployment = admin.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/temper-scheduler")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.k8s.io/kube-scheduler:{KUBERNETES_VERSION}"


def test_upgrade_keeps_generated_certificate(
    installed: None, helm: Helm, control_plane: LocalControlPlane, admin: AdminClient
) -> None:
    secret_path = f"/api/v1/namespaces/{NAMESPACE}/secrets/temper-webhook-tls"
    before = admin.get(secret_path)["data"]
    result = helm.run(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
        "--set", "webhook.factors.normal=0.5", "--kubeconfig", str(control_plane.kubeconfig),
    )  # fmt: skip
    assert result.returncode == 0, f"helm upgrade failed:\n{result.stderr}"
    assert admin.get(secret_path)["data"] == before
    configuration = admin.get(
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIGURATION_NAME}"
    )
    assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == before["ca.crt"]


@dataclass(frozen=True)
class Access:
    """One request a ServiceAccount makes, and whether RBAC must allow it."""

    account: str
    verb: str
    resource: str
    allowed: bool
    group: str = ""
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    def label(self) -> str:
        where = "/".join(p for p in (self.namespace, self.name, self.subresource) if p)
        target = f"{self.resource}.{self.group}" if self.group else self.resource
        verdict = "allowed" if self.allowed else "denied"
        return f"{self.account} {self.verb} {target} {where} {verdict}".replace("  ", " ")


COORDINATION = "coordination.k8s.io"
ADMISSION = "admissionregistration.k8s.io"
ACCESSES = [
    Access(AGENT_ACCOUNT, "list", "pods", True),
    Access(AGENT_ACCOUNT, "watch", "pods", True),
    Access(AGENT_ACCOUNT, "list", "nodes", True),
    Access(AGENT_ACCOUNT, "patch", "nodes", True, name="node-1"),
    Access(AGENT_ACCOUNT, "watch", "namespaces", True, name=NAMESPACE),
    Access(AGENT_ACCOUNT, "list", "namespaces", False),
    Access(AGENT_ACCOUNT, "get", "namespaces", False, name="kube-system"),
    Access(AGENT_ACCOUNT, "delete", "nodes", False, name="node-1"),
    Access(AGENT_ACCOUNT, "update", "nodes", False, name="node-1"),
    Access(AGENT_ACCOUNT, "patch", "nodes", False, name="node-1", subresource="status"),
    Access(AGENT_ACCOUNT, "list", "secrets", False),
    Access(AGENT_ACCOUNT, "delete", "pods", False, namespace="default", name="app"),
    Access(EXTENDER_ACCOUNT, "list", "nodes", True),
    Access(EXTENDER_ACCOUNT, "watch", "pods", True),
    Access(EXTENDER_ACCOUNT, "patch", "nodes", False, name="node-1"),
    Access(EXTENDER_ACCOUNT, "list", "secrets", False),
    Access(EXTENDER_ACCOUNT, "create", "pods", False, namespace="default", subresource="binding"),
    Access(SCHEDULER_ACCOUNT, "create", "pods", True, namespace="default", subresource="binding"),
    Access(SCHEDULER_ACCOUNT, "list", "persistentvolumes", True),
    Access(SCHEDULER_ACCOUNT, "create", "leases", True, group=COORDINATION, namespace=NAMESPACE),
    Access(
        SCHEDULER_ACCOUNT,
        "update",
        "leases",
        True,
        group=COORDINATION,
        namespace=NAMESPACE,
        name="temper-scheduler",
    ),
    Access(
        SCHEDULER_ACCOUNT,
        "update",
        "leases",
        False,
        group=COORDINATION,
        namespace=NAMESPACE,
        name="other-scheduler",
    ),
    Access(
        SCHEDULER_ACCOUNT,
        "get",
        "configmaps",
        True,
        namespace="kube-system",
        name="extension-apiserver-authentication",
    ),
    Access(SCHEDULER_ACCOUNT, "delete", "nodes", False, name="node-1"),
    Access(SCHEDULER_ACCOUNT, "list", "secrets", False),
    Access(WEBHOOK_ACCOUNT, "list", "limitranges", True),
    Access(WEBHOOK_ACCOUNT, "watch", "limitranges", True),
    Access(WEBHOOK_ACCOUNT, "create", "limitranges", False, namespace="default"),
    Access(WEBHOOK_ACCOUNT, "create", "mutatingwebhookconfigurations", False, group=ADMISSION),
    Access(WEBHOOK_ACCOUNT, "list", "pods", False),
    Access(WEBHOOK_ACCOUNT, "list", "secrets", False),
]


def access_allowed(admin: AdminClient, access: Access) -> bool:
    attributes = {
        "verb": access.verb,
        "group": access.group,
        "resource": access.resource,
        "namespace": access.namespace or "",
        "name": access.name or "",
        "subresource": access.subresource or "",
    }
    review = admin.create(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": f"system:serviceaccount:{NAMESPACE}:{access.account}",
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{NAMESPACE}",
                    "system:authenticated",
                ],
                "resourceAttributes": attributes,
            },
        },
    )
    return bool(review["status"].get("allowed", False))


@pytest.mark.parametrize("access", ACCESSES, ids=Access.label)
def test_rbac(installed: None, admin: AdminClient, access: Access) -> None:
    assert access_allowed(admin, access) is access.allowed


WEBHOOK_CONFIGURATIONS = "mutatingwebhookconfigurations"
SELF_REGISTRATION_ACCESSES = [
    Access(WEBHOOK_ACCOUNT, "create", WEBHOOK_CONFIGURATIONS, True, group=ADMISSION),
    Access(
        WEBHOOK_ACCOUNT,
        "get",
        WEBHOOK_CONFIGURATIONS,
        True,
        group=ADMISSION,
        name=CONFIGURATION_NAME,
    ),
    Access(
        WEBHOOK_ACCOUNT,
        "update",
        WEBHOOK_CONFIGURATIONS,
        True,
        group=ADMISSION,
        name=CONFIGURATION_NAME,
    ),
    Access(
        WEBHOOK_ACCOUNT,
        "update",
        WEBHOOK_CONFIGURATIONS,
        False,
        group=ADMISSION,
        name="other-webhooks",
    ),
    Access(
        WEBHOOK_ACCOUNT,
        "delete",
        WEBHOOK_CONFIGURATIONS,
        False,
        group=ADMISSION,
        name=CONFIGURATION_NAME,
    ),
    Access(WEBHOOK_ACCOUNT, "list", WEBHOOK_CONFIGURATIONS, False, group=ADMISSION),
]


def test_rbac_self_registration(
    installed: None, helm: Helm, control_plane: LocalControlPlane, admin: AdminClient
) -> None:
    """`helm upgrade` to self-registration grants the webhook its configuration, and only it."""
    upgrade = ["upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values"]
    kubeconfig = ["--kubeconfig", str(control_plane.kubeconfig)]
    values = VALUE_SETS["webhook-self-registration"]
    result = helm.run(*upgrade, *set_flags(values), *kubeconfig)
    assert result.returncode == 0, f"helm upgrade failed:\n{result.stderr}"
    try:
        wrong = [
            access.label()
            for access in SELF_REGISTRATION_ACCESSES
            if access_allowed(admin, access) is not access.allowed
        ]
    finally:
        result = helm.run(*upgrade, "--set", "webhook.selfRegistration.enabled=false", *kubeconfig)
        assert result.returncode == 0, f"helm upgrade back failed:\n{result.stderr}"
    assert wrong == []


def get_as(control_plane: LocalControlPlane, kubeconfig: Path, path: str) -> int:
    """GET ``path`` with the token in ``kubeconfig``; return the HTTP status."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    request = urllib.request.Request(
        control_plane.server + path, headers={"Authorization": f"Bearer {token}"}
    )
    context = ssl.create_default_context(cafile=str(control_plane.ca_path))
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def kubeconfigs(
    installed: None,
    control_plane: LocalControlPlane,
    admin: AdminClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("service-accounts")
    accounts = (AGENT_ACCOUNT, EXTENDER_ACCOUNT, SCHEDULER_ACCOUNT, WEBHOOK_ACCOUNT, PLANE_ACCOUNT)
    return {
        account: service_account_kubeconfig(control_plane, admin, account, directory)
        for account in accounts
    }


def test_agent_token_lists_only_safe_mode_namespace(
    control_plane: LocalControlPlane, kubeconfigs: dict[str, Path]
) -> None:
    agent = kubeconfigs[AGENT_ACCOUNT]
    selected = f"/api/v1/namespaces?fieldSelector=metadata.name%3D{NAMESPACE}"
    assert get_as(control_plane, agent, selected) == 200
    assert get_as(control_plane, agent, selected + "&watch=1&timeoutSeconds=1") == 200
    assert get_as(control_plane, agent, "/api/v1/namespaces") == 403


@pytest.fixture
def nodes(core_api: k8s.CoreV1Api) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    delete_nodes(core_api, created)


def test_agent_publishes_with_its_account(
    control_plane: LocalControlPlane,
    kubeconfigs: dict[str, Path],
    core_api: k8s.CoreV1Api,
    nodes: list[str],
    tmp_path: Path,
) -> None:
    node = f"helm-agent-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node])
    nodes.append(node)
    kubeconfig = str(kubeconfigs[AGENT_ACCOUNT])
    with running_agent(control_plane, node, tmp_path, "--kubeconfig", kubeconfig):

        def published() -> bool:
            annotations = core_api.read_node(node).metadata.annotations or {}
            return "temper.codes/scheduler" in annotations

        wait_for(published, timeout_seconds=30)
    log = (tmp_path / f"agent-{node}.log").read_text()
    assert "forbidden" not in log.lower()


def wait_http_ok(url: str, process: ManagedProcess, context: ssl.SSLContext | None) -> None:
    def ready() -> bool:
        assert process.exit_code() is None, f"{process.name} exited:\n{process.tail()}"
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    wait_for(ready, timeout_seconds=60)


def extender_decisions(url: str) -> float:
    """Sum of temper_extender_decisions_total over all labels."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("temper_extender_decisions_total{")
    )


@pytest.fixture
def lease_cleanup(admin: AdminClient) -> Iterator[None]:
    yield
    try:
        admin.request(
            "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/temper-scheduler"
        )
    except KubernetesError as error:
        if error.status != 404:
            raise


def test_scheduler_places_pod_with_its_account(
    helm: Helm,
    control_plane: LocalControlPlane,
    admin: AdminClient,
    kubeconfigs: dict[str, Path],
    core_api: k8s.CoreV1Api,
    namespace: str,
    nodes: list[str],
    lease_cleanup: None,
    tmp_path: Path,
) -> None:
    """The rendered KubeSchedulerConfiguration runs in the real kube-scheduler as the chart's
    ServiceAccount, takes its Lease, calls the extender (running as its own account) and
    binds a pod that names the second scheduler."""
    extender_port = free_port()
    extender = ManagedProcess(
        "temper-extender",
        [
            sys.executable, "-m", "temper.cli", "extender",
            "--kubeconfig", str(kubeconfigs[EXTENDER_ACCOUNT]),
            "--listen-address", "127.0.0.1", "--port", str(extender_port),
        ],
        tmp_path / "extender.log",
    )  # fmt: skip
    extender_url = f"http://127.0.0.1:{extender_port}"

    objects = helm.render(INSTALLED_VALUES)
    config = yaml.safe_load(only(objects, "ConfigMap", "temper-scheduler")["data"]["config.yaml"])
    scheduler_kubeconfig = str(kubeconfigs[SCHEDULER_ACCOUNT])
    config["clientConnection"] = {"kubeconfig": scheduler_kubeconfig}
    config["extenders"][0]["urlPrefix"] = extender_url
    config_path = tmp_path / "scheduler.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # Two replicas, as the chart runs them: one leads, the other waits on the Lease and must
    # still pass its readiness probe (/readyz), or a rolling update would never finish.
    schedulers: list[tuple[ManagedProcess, int]] = []
    for replica in range(2):
        port = free_port()
        process = ManagedProcess(
            f"temper-scheduler-{replica}",
            [
                str(control_plane.binaries.kube_scheduler),
                f"--config={config_path}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--authentication-kubeconfig={scheduler_kubeconfig}",
                f"--authorization-kubeconfig={scheduler_kubeconfig}",
            ],
            tmp_path / f"kube-scheduler-{replica}.log",
        )
        schedulers.append((process, port))
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # kube-scheduler's self-signed in-memory certificate
    try:
        wait_http_ok(extender_url + "/readyz", extender, None)
        for process, port in schedulers:
            wait_http_ok(f"https://127.0.0.1:{port}/readyz", process, insecure)

        label = uuid.uuid4().hex[:8]
        node = f"helm-sched-{label}"
        create_nodes(core_api, [node], labels={"temper.codes/test-helm": label})
        nodes.append(node)
        pod = pod_manifest("placed", node_selector={"temper.codes/test-helm": label})
        pod["spec"]["schedulerName"] = "temper-scheduler"
        core_api.create_namespaced_pod(namespace, pod)

        assert wait_for(lambda: bound_node(core_api, namespace, "placed"), 60) == node
        assert extender_decisions(extender_url) > 0
        lease = admin.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/temper-scheduler"
        )
        assert lease["spec"]["holderIdentity"]
    finally:
        for process, _ in schedulers:
            process.stop()
            print(f"{process.name} log:\n{process.tail(30)}")
        extender.stop()
        print(f"extender log:\n{extender.tail(20)}")


def get_over_tls(port: int, path: str, ca_file: Path) -> bool:
    """GET ``path`` on 127.0.0.1, verifying the certificate for the webhook Service's name."""
    context = ssl.create_default_context(cafile=str(ca_file))
    request = f"GET {path} HTTP/1.1\r\nHost: {WEBHOOK_HOST}\r\nConnection: close\r\n\r\n"
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=WEBHOOK_HOST) as tls,
        ):
            tls.sendall(request.encode())
            status_line = tls.recv(4096).split(b"\r\n", 1)[0]
    except ssl.SSLCertVerificationError:
        raise
    except OSError:
        return False
    return status_line.startswith(b"HTTP/1.1 200")


def test_webhook_serves_installed_certificate(
    admin: AdminClient, kubeconfigs: dict[str, Path], tmp_path: Path
) -> None:
    """`temper webhook` runs as its account with the Secret helm generated: it lists
    LimitRanges (ready), and a client that trusts ca.crt accepts it as the Service."""
    secret = admin.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/temper-webhook-tls")
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    port = free_port()
    command = [
        sys.executable, "-m", "temper.cli", "webhook",
        "--kubeconfig", str(kubeconfigs[WEBHOOK_ACCOUNT]),
        "--listen-address", "127.0.0.1", "--port", str(port),
        "--tls-cert-file", str(tmp_path / "tls.crt"),
        "--tls-key-file", str(tmp_path / "tls.key"),
    ]  # fmt: skip
    process = ManagedProcess("temper-webhook", command, tmp_path / "webhook.log")

    def ready() -> bool:
        assert process.exit_code() is None, f"webhook exited:\n{process.tail()}"
        return get_over_tls(port, "/readyz", tmp_path / "ca.crt")

    try:
        wait_for(ready, timeout_seconds=30)
    finally:
        process.stop()
    assert "forbidden" not in (tmp_path / "webhook.log").read_text().lower()


# -- the management plane -----------------------------------------------------------------

PLANE_NAME = "temper-plane"


def plane_objects(objects: list[JsonObject]) -> list[tuple[str, str]]:
    return sorted(
        (item["kind"], item["metadata"]["name"])
        for item in objects
        if item["metadata"]["labels"].get("app.kubernetes.io/component") == "plane"
    )


def test_plane_renders_only_when_enabled(helm: Helm) -> None:
    assert plane_objects(helm.render([])) == []
    assert plane_objects(helm.render(VALUE_SETS["plane"])) == [
        ("ClusterRole", PLANE_NAME),
        ("ClusterRoleBinding", PLANE_NAME),
        ("ConfigMap", f"{PLANE_NAME}-prices"),
        ("Deployment", PLANE_NAME),
        ("NetworkPolicy", "temper-agent-from-plane"),
        ("NetworkPolicy", PLANE_NAME),
        ("PersistentVolumeClaim", f"{PLANE_NAME}-data"),
        ("Service", PLANE_NAME),
        ("ServiceAccount", PLANE_NAME),
    ]


def plane_mounts(deployment: JsonObject) -> dict[str, tuple[str, JsonObject]]:
    """Volume name -> (mount path, volume) of the plane container."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    [container] = pod["containers"]
    return {m["name"]: (m["mountPath"], volumes[m["name"]]) for m in container["volumeMounts"]}


def test_plane_keeps_database_on_claim(helm: Helm) -> None:
    deployment = only(helm.render(VALUE_SETS["plane"]), "Deployment", PLANE_NAME)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    path, volume = plane_mounts(deployment)["data"]
    assert volume["persistentVolumeClaim"] == {"claimName": f"{PLANE_NAME}-data"}
    assert container_env(deployment)["TEMPER_PLANE_DATABASE_PATH"].startswith(path + "/")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 65532


def test_plane_emptydir_without_persistence(helm: Helm) -> None:
    objects = helm.render(VALUE_SETS["plane-hub-prices-emptydir"])
    assert not find(objects, "PersistentVolumeClaim")
    _path, volume = plane_mounts(only(objects, "Deployment", PLANE_NAME))["data"]
    assert volume["emptyDir"] == {}


def test_plane_price_table_reaches_plane(helm: Helm) -> None:
    objects = helm.render(VALUE_SETS["plane-hub-prices-emptydir"])
    config = only(objects, "ConfigMap", f"{PLANE_NAME}-prices")
    table = parse_price_table(config["data"]["prices.yaml"], "prices.yaml")
    assert table.currency == "USD"
    assert table.machine_types["n2-standard-8"].cpu_core_hour == 0.0475
    assert table.machine_types["n2-standard-8"].node_hour == 0.38
    assert table.default is not None
    assert table.default.node_hour == 0.4
    deployment = only(objects, "Deployment", PLANE_NAME)
    path, volume = plane_mounts(deployment)["prices"]
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    assert container_env(deployment)["TEMPER_PLANE_PRICE_TABLE_PATH"] == f"{path}/prices.yaml"


def test_plane_without_prices_has_no_table(helm: Helm) -> None:
    deployment = only(helm.render(VALUE_SETS["plane"]), "Deployment", PLANE_NAME)
    assert "TEMPER_PLANE_PRICE_TABLE_PATH" not in container_env(deployment)


@pytest.mark.parametrize("value_set", ["plane", "plane-hub-prices-emptydir"])
def test_plane_env_names_real_settings(helm: Helm, value_set: str) -> None:
    """Every TEMPER_PLANE_* variable is a field of PlaneSettings and validates."""
    deployment = only(helm.render(VALUE_SETS[value_set]), "Deployment", PLANE_NAME)
    env = container_env(deployment)
    fields = {"TEMPER_PLANE_" + field.upper() for field in PlaneSettings.model_fields}
    assert set(env) <= fields
    settings = settings_tree.load(PlaneSettings, "plane", environ=env)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_timeout_seconds
    assert settings.agent_namespace == NAMESPACE
    assert settings.safe_mode_namespace == NAMESPACE
    if value_set == "plane":
        assert settings.hub_enabled is False
        assert settings.price_table_path is None
    else:
        assert settings.hub_enabled is True
        assert settings.hub_allowed_peers == ["plane.east.example.test"]
        assert settings.eviction_grace_period_seconds == 30


def test_plane_hub_key_from_generated_secret(helm: Helm) -> None:
    objects = helm.render(VALUE_SETS["plane-hub-prices-emptydir"])
    secret = only(objects, "Secret", f"{PLANE_NAME}-hub-key")
    assert len(base64.b64decode(secret["data"]["key"])) >= 32
    deployment = only(objects, "Deployment", PLANE_NAME)
    path, volume = plane_mounts(deployment)["hub-key"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert container_env(deployment)["TEMPER_PLANE_HUB_KEY_PATH"] == f"{path}/key"


def test_plane_hub_key_from_given_secret(helm: Helm) -> None:
    values = [*VALUE_SETS["plane-hub-prices-emptydir"], "plane.hub.keySecret=company-key"]
    objects = helm.render(values)
    assert not find(objects, "Secret")
    _path, volume = plane_mounts(only(objects, "Deployment", PLANE_NAME))["hub-key"]
    assert volume["secret"]["secretName"] == "company-key"


def test_plane_upgrade_keeps_hub_key(
    installed: None, helm: Helm, control_plane: LocalControlPlane, admin: AdminClient
) -> None:
    secret_path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{PLANE_NAME}-hub-key"
    before = admin.get(secret_path)["data"]
    result = helm.run(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
        "--set", "plane.hub.peerTimeoutSeconds=7", "--kubeconfig", str(control_plane.kubeconfig),
    )  # fmt: skip
    assert result.returncode == 0, f"helm upgrade failed:\n{result.stderr}"
    assert admin.get(secret_path)["data"] == before


SCHEDULING = "scheduling.k8s.io"
# The namespace of the workloads the plane acts on.
APPS = "default"
PLANE_ACCESSES = [
    Access(PLANE_ACCOUNT, "list", "nodes", True),
    Access(PLANE_ACCOUNT, "watch", "nodes", True),
    Access(PLANE_ACCOUNT, "get", "nodes", True, name="node-1"),
    Access(PLANE_ACCOUNT, "patch", "nodes", True, name="node-1"),
    Access(PLANE_ACCOUNT, "watch", "namespaces", True, name=NAMESPACE),
    Access(PLANE_ACCOUNT, "patch", "namespaces", True, name=NAMESPACE),
    Access(PLANE_ACCOUNT, "list", "pods", True),
    Access(PLANE_ACCOUNT, "watch", "pods", True),
    Access(PLANE_ACCOUNT, "get", "pods", True, namespace=APPS, name="app"),
    Access(PLANE_ACCOUNT, "get", "pods", True, namespace=APPS, name="app", subresource="log"),
    Access(
        PLANE_ACCOUNT, "create", "pods", True, namespace=APPS, name="app", subresource="eviction"
    ),
    Access(PLANE_ACCOUNT, "list", "poddisruptionbudgets", True, group="policy"),
    Access(PLANE_ACCOUNT, "get", "deployments", True, group="apps", namespace=APPS, name="w"),
    Access(PLANE_ACCOUNT, "patch", "deployments", True, group="apps", namespace=APPS, name="w"),
    Access(PLANE_ACCOUNT, "watch", "statefulsets", True, group="apps"),
    Access(PLANE_ACCOUNT, "patch", "daemonsets", True, group="apps", namespace=APPS, name="d"),
    Access(PLANE_ACCOUNT, "watch", "replicasets", True, group="apps"),
    Access(PLANE_ACCOUNT, "list", "controllerrevisions", True, group="apps"),
    Access(PLANE_ACCOUNT, "watch", "jobs", True, group="batch"),
    Access(PLANE_ACCOUNT, "watch", "cronjobs", True, group="batch"),
    Access(PLANE_ACCOUNT, "get", "priorityclasses", True, group=SCHEDULING, name="temper-high"),
    # Denied: requests the plane never makes.
    Access(PLANE_ACCOUNT, "list", "namespaces", False),
    Access(PLANE_ACCOUNT, "patch", "namespaces", False, name="kube-system"),
    Access(PLANE_ACCOUNT, "update", "nodes", False, name="node-1"),
    Access(PLANE_ACCOUNT, "delete", "nodes", False, name="node-1"),
    Access(PLANE_ACCOUNT, "patch", "nodes", False, name="node-1", subresource="status"),
    Access(PLANE_ACCOUNT, "delete", "pods", False, namespace=APPS, name="app"),
    Access(PLANE_ACCOUNT, "patch", "pods", False, namespace=APPS, name="app"),
    Access(PLANE_ACCOUNT, "create", "pods", False, namespace=APPS, name="app", subresource="exec"),
    Access(PLANE_ACCOUNT, "delete", "deployments", False, group="apps", namespace=APPS, name="w"),
    Access(PLANE_ACCOUNT, "patch", "replicasets", False, group="apps", namespace=APPS, name="w-1"),
    Access(PLANE_ACCOUNT, "list", "secrets", False),
    Access(
        PLANE_ACCOUNT, "get", "secrets", False, namespace=NAMESPACE, name=f"{PLANE_NAME}-hub-key"
    ),
    Access(PLANE_ACCOUNT, "create", "priorityclasses", False, group=SCHEDULING),
]


@pytest.mark.parametrize("access", PLANE_ACCESSES, ids=Access.label)
def test_rbac_plane(installed: None, admin: AdminClient, access: Access) -> None:
    assert access_allowed(admin, access) is access.allowed


def plane_request(url: str, method: str, token: str) -> int:
    """Send ``method url`` with ``token``; return the HTTP status."""
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_plane_serves_with_its_account(
    kubeconfigs: dict[str, Path], core_api: k8s.CoreV1Api, nodes: list[str], tmp_path: Path
) -> None:
    """`temper plane serve` runs as the chart's ServiceAccount: its watch cache syncs, the
    savings view lists every workload kind, and cordon and fleet safe mode write."""
    database = tmp_path / "plane.sqlite3"
    store = Store(database)
    token = store.create_token("ci", Role.ADMIN)
    store.close()
    node = f"helm-plane-{uuid.uuid4().hex[:6]}"
    create_nodes(core_api, [node])
    nodes.append(node)
    port = free_port()
    command = [
        sys.executable, "-m", "temper.cli", "plane", "serve",
        "--kubeconfig", str(kubeconfigs[PLANE_ACCOUNT]),
        "--database-path", str(database),
        "--safe-mode-namespace", NAMESPACE,
        "--listen-address", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = ManagedProcess("temper-plane", command, tmp_path / "plane.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/healthz", process, None)
        assert plane_request(url + "/api/v1/savings", "GET", token) == 200
        assert plane_request(url + f"/api/v1/nodes/{node}/cordon", "POST", token) == 200
        assert core_api.read_node(node).spec.unschedulable is True
        assert plane_request(url + "/api/v1/safe-mode", "PUT", token) == 200
        assert plane_request(url + "/api/v1/safe-mode", "DELETE", token) == 200
    finally:
        process.stop()
        print(f"plane log:\n{process.tail(30)}")
    assert "forbidden" not in (tmp_path / "plane.log").read_text().lower()
