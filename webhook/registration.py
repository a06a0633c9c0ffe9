"""The MutatingWebhookConfiguration that sends pod creations to the overcommit webhook."""

import asyncio
import base64
import logging
import random
from dataclasses import dataclass
from typing import Any

from temper.annotations import ORIGINAL_REQUESTS, OVERCOMMIT_ENABLED, OVERCOMMIT_LABEL
from temper.errors import KubernetesError
from temper.kube import JsonObject, KubeClient
from temper.tiers import SYSTEM_CLASSES, SYSTEM_PRIORITY_MIN, TIER_SPECS, Tier
from webhook.mutation import MIRROR_ANNOTATION

log = logging.getLogger(__name__)

CONFIGURATION_NAME = "temper-overcommit"
# Webhook names must be fully qualified domain names.
WEBHOOK_NAME = "overcommit.temper.codes"
MUTATE_PATH = "/mutate"
COLLECTION_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
TIMEOUT_SECONDS = 5
UPDATE_ATTEMPTS = 5


def _cel_strings(values: list[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def match_conditions() -> list[dict[str, str]]:
    """Return the CEL conditions under which the API server calls the webhook at all.

    The API server calls the webhook only when every expression is true. Each one is false
    only for pods that the rules in webhook/mutation.py leave unchanged anyway: mirror pods,
    pods that carry the original-requests annotation, pods of the system classes or
    priorities, and pods of the critical tier. A pod is critical when its class is
    ``temper-critical``, or when its class is not a Temper class and its priority is at
    least the critical class value (``temper.tiers.pod_tier``). The API server admits these
    pods without the HTTPS round trip.
    """
    temper_classes = [tier.priority_class for tier in Tier]
    skipped_classes = [*sorted(SYSTEM_CLASSES), Tier.CRITICAL.priority_class]
    class_name = "object.spec.priorityClassName"
    has_class = f"has({class_name})"
    priority = "object.spec.priority"
    has_priority = f"has({priority})"
    critical_value = TIER_SPECS[Tier.CRITICAL].value
    annotations = "object.metadata.annotations"
    return [
        {
            "name": "not-mirror-or-already-mutated",
            "expression": (
                f"!has({annotations}) || !('{MIRROR_ANNOTATION}' in {annotations} || "
                f"'{ORIGINAL_REQUESTS}' in {annotations})"
            ),
        },
        {
            "name": "not-system-or-critical",
            "expression": (
                f"!({has_class} && {class_name} in {_cel_strings(skipped_classes)}) && "
                f"!({has_priority} && {priority} >= {SYSTEM_PRIORITY_MIN}) && "
                f"!({has_priority} && {priority} >= {critical_value} && "
                f"!({has_class} && {class_name} in {_cel_strings(temper_classes)}))"
            ),
        },
    ]


@dataclass(frozen=True)
class ServiceReference:
    """An in-cluster Service that fronts the webhook (``clientConfig.service``)."""

    namespace: str
    name: str
    path: str = MUTATE_PATH
    port: int = 443


def webhook_configuration_manifest(
    *,
    url: str | None = None,
    service: ServiceReference | None = None,
    ca_bundle_pem: bytes | None = None,
) -> dict[str, Any]:
    """Return the MutatingWebhookConfiguration ``temper-overcommit`` as a dict.

    Give exactly one of ``url`` (reachable from kube-apiserver, https only) and ``service``.
    Without ``ca_bundle_pem`` the API server verifies the webhook with its system trust store.
    The webhook fails open (``failurePolicy: Ignore``): an outage only pauses overcommit.
    """
    if (url is None) == (service is None):
        raise ValueError("pass exactly one of url and service for clientConfig")
    client_config: dict[str, Any] = {}
    if url is not None:
        client_config["url"] = url
    if service is not None:
        client_config["service"] = {
            "namespace": service.namespace,
            "name": service.name,
            "path": service.path,
            "port": service.port,
        }
    if ca_bundle_pem is not None:
        client_config["caBundle"] = base64.b64encode(ca_bundle_pem).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": CONFIGURATION_NAME,
            "labels": {"app.kubernetes.io/part-of": "temper"},
        },
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client_config,
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        # "pods" alone leaves out pods/resize, pods/binding and the like.
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {"matchLabels": {OVERCOMMIT_LABEL: OVERCOMMIT_ENABLED}},
                "matchConditions": match_conditions(),
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "timeoutSeconds": TIMEOUT_SECONDS,
                "admissionReviewVersions": ["v1"],
                "reinvocationPolicy": "IfNeeded",
                "matchPolicy": "Equivalent",
            }
        ],
    }


async def apply_webhook_configuration(client: KubeClient, manifest: dict[str, Any]) -> JsonObject:
    """Create the configuration, or replace the existing one of the same name; return it.

    Raises KubernetesError when the API server rejects the object or keeps reporting
    conflicts with concurrent writers.
    """
    name = manifest["metadata"]["name"]
    try:
        created = await client.request("POST", COLLECTION_PATH, body=manifest)
    except KubernetesError as error:
        if error.status != 409:
            raise
    else:
        log.info("MutatingWebhookConfiguration created", extra={"configuration": name})
        return created

    for _attempt in range(UPDATE_ATTEMPTS):
        existing = await client.get(f"{COLLECTION_PATH}/{name}")
        version = existing["metadata"]["resourceVersion"]
        body = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": version}}
        try:
            updated = await client.request("PUT", f"{COLLECTION_PATH}/{name}", body=body)
        except KubernetesError as error:
            if error.status != 409:
                raise
            continue
        log.info("MutatingWebhookConfiguration updated", extra={"configuration": name})
        return updated
    raise KubernetesError(
        f"MutatingWebhookConfiguration {name} changed under every one of {UPDATE_ATTEMPTS} "
        "updates; stop the other writer or retry later",
        status=409,
    )


async def register_until_done(
    client: KubeClient,
    manifest: dict[str, Any],
    *,
    max_backoff_seconds: float = 30.0,
) -> None:
    """Apply the configuration, retrying with exponential backoff until it succeeds."""
    failures = 0
    while True:
        try:
            await apply_webhook_configuration(client, manifest)
            return
        except KubernetesError as error:
            failures += 1
            delay = min(max_backoff_seconds, 0.5 * 2 ** min(failures, 8))
            delay *= 0.8 + 0.4 * random.random()
            # The first failure of a series goes out at ERROR, the retries at DEBUG.
            log.log(
                logging.ERROR if failures == 1 else logging.DEBUG,
                "registering the MutatingWebhookConfiguration failed, retrying",
                extra={
                    "configuration": manifest["metadata"]["name"],
                    "error": str(error),
                    "attempt": failures,
                    "retry_in_seconds": round(delay, 2),
                },
            )
            await asyncio.sleep(delay)
