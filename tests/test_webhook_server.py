"""The webhook's HTTPS server on loopback: AdmissionReview handling, health, TLS reload."""

import asyncio
import base64
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography import x509

from temper.errors import InvalidSettingsError
from temper.tls import CertificateAuthority, KeyPair
from webhook.certificates import ServingTls, build_serving_tls
from webhook.limitranges import LimitRangeIndex
from webhook.server import ListenError, WebhookServer
from webhook.settings import WebhookSettings

MAX_REQUEST_BYTES = 64 * 1024
UID = "705ab4f5-6393-11e8-b7cc-42010a800002"


def review(
    pod: Any = None,
    *,
    uid: Any = UID,
    operation: str = "CREATE",
    dry_run: Any = False,
    **request_fields: Any,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "team-a",
        "operation": operation,
        "dryRun": dry_run,
        "object": pod_object() if pod is None else pod,
    }
    request.update(request_fields)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def pod_object(cpu_request: str = "1", priority_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": "app:1", "resources": {"requests": {"cpu": cpu_request}}}
        ]
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-a"},
        "spec": spec,
    }


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


async def peer_certificate(port: int, context: ssl.SSLContext) -> x509.Certificate:
    """Open a new TLS connection and return the certificate the server presented."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


class Webhook:
    """A started server and an HTTPS session that trusts its CA."""

    def __init__(self, server: WebhookServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    async def post(self, body: bytes) -> tuple[int, Any]:
        async with self.session.post("/mutate", data=body) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    async def admit(self, document: Any) -> dict[str, Any]:
        status, body = await self.post(orjson.dumps(document))
        assert status == 200
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        response: dict[str, Any] = body["response"]
        return response


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    settings = WebhookSettings(port=0, max_request_bytes=MAX_REQUEST_BYTES)
    tls = build_serving_tls(settings)
    assert tls.ca_bundle_pem is not None
    server = WebhookServer(settings, tls.context)
    await server.start()
    connector = aiohttp.TCPConnector(ssl=client_context(tls.ca_bundle_pem))
    try:
        async with aiohttp.ClientSession(
            base_url=f"https://127.0.0.1:{server.port}", connector=connector
        ) as session:
            yield Webhook(server, session)
    finally:
        await server.stop()


def decoded_patch(response: dict[str, Any]) -> Any:
    return orjson.loads(base64.b64decode(response["patch"], validate=True))


async def test_pod_creation_patched(webhook: Webhook) -> None:
    response = await webhook.admit(review())
    assert response["uid"] == UID
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = decoded_patch(response)
    assert patch[0] == {
        "op": "replace",
        "path": "/spec/containers/0/resources/requests/cpu",
        "value": "600m",
    }
    assert patch[1]["path"] == "/metadata/annotations"
    assert response["warnings"] == ["temper overcommit: app cpu request 1 -> 600m"]


async def test_dry_run_gets_same_patch(webhook: Webhook) -> None:
    real = await webhook.admit(review())
    dry = await webhook.admit(review(dry_run=True))
    assert dry["patch"] == real["patch"]


@pytest.mark.parametrize(
    ("case", "document"),
    [
        ("critical tier", review(pod_object(priority_class="temper-critical"))),
        ("request at floor", review(pod_object(cpu_request="10m"))),
        ("update", review(operation="UPDATE")),
        ("subresource", review(subResource="ephemeralcontainers")),
    ],
)
async def test_allowed_without_patch(webhook: Webhook, case: str, document: Any) -> None:
    response = await webhook.admit(document)
    assert response["uid"] == UID, case
    assert response["allowed"] is True, case
    assert "patch" not in response, case
    assert "patchType" not in response, case


def _without_request() -> dict[str, Any]:
    document = review()
    del document["request"]
    return document


MALFORMED_WITH_UID = [
    ("v1beta1", {**review(), "apiVersion": "admission.k8s.io/v1beta1"}),
    ("wrong kind", {**review(), "kind": "AdmissionRequest"}),
    ("no apiVersion", {key: value for key, value in review().items() if key != "apiVersion"}),
    ("request kind Secret", review(kind={"group": "", "version": "v1", "kind": "Secret"})),
    ("request kind apps", review(kind={"group": "apps", "version": "v1", "kind": "Pod"})),
    ("request kind string", review(kind="Pod")),
    ("object null", review(object=None)),
    ("object a list", review(object=[])),
    ("object a ConfigMap", review({"apiVersion": "v1", "kind": "ConfigMap", "data": {}})),
    ("dryRun a string", review(dry_run="yes")),
    ("operation a number", review(operation=1)),
    ("spec a list", review({"kind": "Pod", "metadata": {}, "spec": []})),
    ("containers an object", review({"kind": "Pod", "spec": {"containers": {"a": 1}}})),
    ("container without name", review({"kind": "Pod", "spec": {"containers": [{}]}})),
    (
        "requests a string",
        review({"kind": "Pod", "spec": {"containers": [{"name": "a", "resources": "x"}]}}),
    ),
]


@pytest.mark.parametrize(("case", "document"), MALFORMED_WITH_UID)
async def test_malformed_with_uid_allowed_unchanged(
    webhook: Webhook, case: str, document: Any
) -> None:
    response = await webhook.admit(document)
    assert response["uid"] == UID, case
    assert response["allowed"] is True, case
    assert "patch" not in response, case
    assert "patchType" not in response, case


MALFORMED_WITHOUT_UID = [
    ("not JSON", b"{not json"),
    ("empty body", b""),
    ("JSON array", b"[]"),
    ("JSON string", b'"AdmissionReview"'),
    ("no request", orjson.dumps(_without_request())),
    ("request a list", orjson.dumps({**review(), "request": []})),
    ("no uid", orjson.dumps(review(uid=None))),
    ("empty uid", orjson.dumps(review(uid=""))),
    ("uid a number", orjson.dumps(review(uid=7))),
]


@pytest.mark.parametrize(("case", "body"), MALFORMED_WITHOUT_UID)
async def test_malformed_without_uid_rejected(webhook: Webhook, case: str, body: bytes) -> None:
    status, answer = await webhook.post(body)
    assert status == 400, case
    assert isinstance(answer["error"], str), case


async def test_oversized_body_rejected(webhook: Webhook) -> None:
    document = review()
    document["request"]["object"]["metadata"]["annotations"] = {"big": "x" * MAX_REQUEST_BYTES}
    status, answer = await webhook.post(orjson.dumps(document))
    assert status == 413
    assert "bytes" in answer["error"]


async def test_server_survives_malformed_inputs(webhook: Webhook) -> None:
    for _case, body in MALFORMED_WITHOUT_UID:
        await webhook.post(body)
    for _case, document in MALFORMED_WITH_UID:
        await webhook.admit(document)
    response = await webhook.admit(review())
    assert response["patchType"] == "JSONPatch"


async def test_mutate_rejects_get(webhook: Webhook) -> None:
    async with webhook.session.get("/mutate") as response:
        assert response.status == 405


async def test_healthz_ok(webhook: Webhook) -> None:
    async with webhook.session.get("/healthz") as response:
        assert response.status == 200


async def test_readyz_follows_ready_flag(webhook: Webhook) -> None:
    webhook.server.ready = False
    async with webhook.session.get("/readyz") as response:
        assert response.status == 503
    webhook.server.ready = True
    async with webhook.session.get("/readyz") as response:
        assert response.status == 200


async def test_generated_certificate_names() -> None:
    settings = WebhookSettings(
        port=0, service_dns_names=["temper-webhook.temper-system.svc", "temper-webhook"]
    )
    tls = build_serving_tls(settings)
    assert tls.ca_bundle_pem is not None
    assert tls.reloader is None
    server = WebhookServer(settings, tls.context)
    await server.start()
    try:
        certificate = await peer_certificate(server.port, client_context(tls.ca_bundle_pem))
    finally:
        await server.stop()
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "localhost",
        "temper-webhook.temper-system.svc",
        "temper-webhook",
    }
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


class CertificateFiles:
    """Serving certificate files signed by one CA, rewritten in place like a secret mount."""

    def __init__(self, directory: Path) -> None:
        self.authority = CertificateAuthority("test-ca")
        self.cert_file = directory / "tls.crt"
        self.key_file = directory / "tls.key"
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(self.authority.cert_pem)

    def issue(self) -> KeyPair:
        return self.authority.issue("webhook", ip_addresses=("127.0.0.1",))

    def write(self, pair: KeyPair) -> int:
        self.cert_file.write_bytes(pair.cert_pem)
        self.key_file.write_bytes(pair.key_pem)
        return x509.load_pem_x509_certificate(pair.cert_pem).serial_number


@pytest.fixture
async def file_server(tmp_path: Path) -> AsyncIterator[tuple[CertificateFiles, ServingTls, int]]:
    files = CertificateFiles(tmp_path)
    files.write(files.issue())
    settings = WebhookSettings(
        port=0,
        tls_cert_file=files.cert_file,
        tls_key_file=files.key_file,
        tls_ca_file=files.ca_file,
        tls_reload_interval_seconds=0.05,
    )
    tls = build_serving_tls(settings)
    server = WebhookServer(settings, tls.context)
    await server.start()
    try:
        yield files, tls, server.port
    finally:
        await server.stop()


async def test_certificate_files_served(
    file_server: tuple[CertificateFiles, ServingTls, int],
) -> None:
    files, tls, port = file_server
    assert tls.ca_bundle_pem == files.authority.cert_pem
    served = await peer_certificate(port, client_context(files.authority.cert_pem))
    assert (
        served.serial_number
        == x509.load_pem_x509_certificate(files.cert_file.read_bytes()).serial_number
    )


async def test_changed_files_reloaded(
    file_server: tuple[CertificateFiles, ServingTls, int],
) -> None:
    files, tls, port = file_server
    assert tls.reloader is not None
    context = client_context(files.authority.cert_pem)
    old_serial = (await peer_certificate(port, context)).serial_number
    new_serial = files.write(files.issue())
    assert tls.reloader.check() is True
    assert (await peer_certificate(port, context)).serial_number == new_serial
    assert new_serial != old_serial


async def test_mismatched_pair_keeps_old_certificate(
    file_server: tuple[CertificateFiles, ServingTls, int],
) -> None:
    files, tls, port = file_server
    assert tls.reloader is not None
    context = client_context(files.authority.cert_pem)
    old_serial = (await peer_certificate(port, context)).serial_number
    first, second = files.issue(), files.issue()
    files.write(KeyPair(first.cert_pem, second.key_pem))
    assert tls.reloader.check() is False
    assert (await peer_certificate(port, context)).serial_number == old_serial
    fixed_serial = files.write(first)
    assert tls.reloader.check() is True
    assert (await peer_certificate(port, context)).serial_number == fixed_serial


async def test_reload_task_picks_up_change(
    file_server: tuple[CertificateFiles, ServingTls, int],
) -> None:
    files, tls, port = file_server
    assert tls.reloader is not None
    task = asyncio.create_task(tls.reloader.run())
    try:
        new_serial = files.write(files.issue())
        context = client_context(files.authority.cert_pem)
        async with asyncio.timeout(5):
            while (await peer_certificate(port, context)).serial_number != new_serial:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert tls.reloader.reloads == 1


def test_unreadable_certificate_files_rejected(tmp_path: Path) -> None:
    settings = WebhookSettings(
        tls_cert_file=tmp_path / "missing.crt", tls_key_file=tmp_path / "missing.key"
    )
    with pytest.raises(InvalidSettingsError, match=r"missing\.crt"):
        build_serving_tls(settings)


async def test_malformed_request_logged_once_per_interval(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="webhook.server")
    for _attempt in range(3):
        await webhook.admit({**review(), "apiVersion": "admission.k8s.io/v1beta1"})
    records = [record for record in caplog.records if record.name == "webhook.server"]
    assert len(records) == 1
    assert "v1beta1" in records[0].__dict__["reason"]
    assert records[0].__dict__["uid"] == UID


async def test_port_in_use_raises_listen_error(webhook: Webhook) -> None:
    settings = WebhookSettings(port=webhook.server.port)
    second = WebhookServer(settings, build_serving_tls(settings).context)
    with pytest.raises(ListenError, match=str(webhook.server.port)):
        await second.start()


@pytest.fixture
async def indexed_webhook() -> AsyncIterator[tuple[Webhook, LimitRangeIndex]]:
    settings = WebhookSettings(port=0)
    tls = build_serving_tls(settings)
    assert tls.ca_bundle_pem is not None
    index = LimitRangeIndex()
    server = WebhookServer(settings, tls.context, index)
    await server.start()
    connector = aiohttp.TCPConnector(ssl=client_context(tls.ca_bundle_pem))
    try:
        async with aiohttp.ClientSession(
            base_url=f"https://127.0.0.1:{server.port}", connector=connector
        ) as session:
            yield Webhook(server, session), index
    finally:
        await server.stop()


async def test_unsynced_limit_ranges_allow_unchanged(
    indexed_webhook: tuple[Webhook, LimitRangeIndex],
) -> None:
    webhook, _index = indexed_webhook
    response = await webhook.admit(review())
    assert response["allowed"] is True
    assert "patch" not in response


async def test_namespace_limit_range_clamps(
    indexed_webhook: tuple[Webhook, LimitRangeIndex],
) -> None:
    webhook, index = indexed_webhook
    index.observe(
        "ADDED",
        {
            "metadata": {"name": "floor", "namespace": "team-a"},
            "spec": {"limits": [{"type": "Container", "min": {"cpu": "700m"}}]},
        },
    )
    index.synced = True
    response = await webhook.admit(review())
    assert decoded_patch(response)[0]["value"] == "700m"
    other = await webhook.admit(review(namespace="team-b"))
    assert decoded_patch(other)[0]["value"] == "600m"


async def test_scaled_pod_logged_once_per_interval(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhook.server")
    for _attempt in range(3):
        await webhook.admit(review())
    records = [record for record in caplog.records if record.name == "webhook.server"]
    assert [record.getMessage() for record in records] == ["pod CPU requests scaled"]
    assert records[0].__dict__["uid"] == UID
    assert records[0].__dict__["scaled_pods_not_logged"] == 0
