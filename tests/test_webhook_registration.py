"""The MutatingWebhookConfiguration manifest the webhook registers and a chart can reuse."""

import base64

import pytest

from webhook.registration import (
    CONFIGURATION_NAME,
    ServiceReference,
    webhook_configuration_manifest,
)


def test_manifest_with_url_and_ca() -> None:
    manifest = webhook_configuration_manifest(
        url="https://127.0.0.1:8443/mutate", ca_bundle_pem=b"PEM"
    )
    assert manifest["metadata"]["name"] == CONFIGURATION_NAME
    client_config = manifest["webhooks"][0]["clientConfig"]
    assert client_config == {
        "url": "https://127.0.0.1:8443/mutate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }


def test_manifest_with_service() -> None:
    service = ServiceReference(namespace="temper-system", name="temper-webhook")
    manifest = webhook_configuration_manifest(service=service)
    client_config = manifest["webhooks"][0]["clientConfig"]
    assert client_config == {
        "service": {
            "namespace": "temper-system",
            "name": "temper-webhook",
            "path": "/mutate",
            "port": 443,
        }
    }


def test_manifest_policy_fields() -> None:
    hook = webhook_configuration_manifest(url="https://x/mutate")["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["namespaceSelector"] == {"matchLabels": {"temper.codes/overcommit": "enabled"}}
    names = [condition["name"] for condition in hook["matchConditions"]]
    assert names == ["not-mirror-or-already-mutated", "not-system-or-critical"]
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]


@pytest.mark.parametrize(
    "arguments",
    [{}, {"url": "https://x/mutate", "service": ServiceReference("ns", "svc")}],
    ids=["neither", "both"],
)
def test_manifest_needs_one_client_config(arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        webhook_configuration_manifest(**arguments)  # type: ignore[arg-type]
