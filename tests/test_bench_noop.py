"""The no-op extender and webhook that the benchmarks use as their floor respond correctly.

A floor that responded wrongly would make kube-scheduler or the API server take a shorter path
(an error, a failed-open call) and so measure less than the protocol costs.
"""

import base64
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from bench import gofloors
from temper.controlplane.process import free_port
from temper.tls import CertificateAuthority


@contextmanager
def serving(
    command: list[str], ready_url: str, context: ssl.SSLContext | None, log_path: Path
) -> Iterator[None]:
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(ready_url, timeout=2, context=context):
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, f"{command[0]} not ready at {ready_url}"
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def post(url: str, body: object, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_noop_extender_passes_and_scores_nothing(tmp_path: Path) -> None:
    binary = gofloors.build("noopextender", tmp_path)
    base = f"http://127.0.0.1:{free_port()}"
    with serving(
        [str(binary), "--address", base.removeprefix("http://")],
        base + "/readyz",
        None,
        tmp_path / "log",
    ):
        names = ["node-a", "node-b", "node-c"]
        status, body = post(base + "/filter", {"Pod": {"metadata": {}}, "NodeNames": names})
        assert status == 200
        result = orjson.loads(body)
        assert result["NodeNames"] == names
        assert result["FailedNodes"] == {}
        assert result["Error"] == ""

        status, body = post(base + "/prioritize", {"Pod": {}, "NodeNames": names})
        assert status == 200
        assert orjson.loads(body) == []

        status, body = post(base + "/filter", "not ExtenderArgs")
        assert status == 400
        assert b"ExtenderArgs" in body


def test_noop_webhook_patches_over_tls(tmp_path: Path) -> None:
    binary = gofloors.build("noopwebhook", tmp_path)
    authority = CertificateAuthority("test-noop-webhook-ca")
    cert, key = authority.issue("noopwebhook", ip_addresses=("127.0.0.1",)).write(tmp_path, "tls")
    context = ssl.create_default_context(cadata=authority.cert_pem.decode())
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    command = [
        str(binary),
        "--address",
        f"127.0.0.1:{port}",
        "--cert",
        str(cert),
        "--key",
        str(key),
    ]
    with serving(command, base + "/readyz", context, tmp_path / "log"):
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "4b1d-uid", "object": {"metadata": {"name": "p"}}},
        }
        status, body = post(base + "/mutate", review, context)
        assert status == 200
        answer = orjson.loads(body)
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        response = answer["response"]
        assert response["uid"] == "4b1d-uid"
        assert response["allowed"] is True
        assert response["patchType"] == "JSONPatch"
        patch = orjson.loads(base64.b64decode(response["patch"]))
        assert patch == [
            {
                "op": "add",
                "path": "/metadata/annotations",
                "value": {"bench.temper.codes/noop": "1"},
            }
        ]

        status, _body = post(base + "/mutate", {"kind": "AdmissionReview"}, context)
        assert status == 400
