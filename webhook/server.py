"""The HTTPS server: ``POST /mutate`` (AdmissionReview v1), ``GET /healthz``, ``GET /readyz``.

Every request body gets a response, and errors in the rules are logged, never raised. A
malformed AdmissionReview whose ``request.uid`` is known gets a well-formed response that
allows the pod unchanged. Without a uid to echo the server returns HTTP 400, and HTTP 413
for a body above ``max_request_bytes``. The API server treats both as a failed call and,
with ``failurePolicy: Ignore``, admits the pod unchanged.
"""

import base64
import logging
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from temper.errors import TemperError
from webhook.limitranges import NO_LIMIT_RANGE, LimitRangeIndex
from webhook.mutation import InvalidPodError, Mutation, mutate_pod
from webhook.settings import WebhookSettings

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
REPEAT_LOG_INTERVAL_SECONDS = 60.0


class ListenError(TemperError):
    """The HTTPS server could not bind its address and port."""


class MalformedReviewError(ValueError):
    """An AdmissionReview that cannot be handled, with ``uid`` None when none can be echoed."""

    def __init__(self, category: str, message: str, uid: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.uid = uid


@dataclass(frozen=True)
class AdmissionRequest:
    """The fields of ``AdmissionReview.request`` the webhook uses."""

    uid: str
    operation: str
    namespace: str
    sub_resource: str
    dry_run: bool
    pod: dict[str, Any]


def parse_review(body: bytes) -> AdmissionRequest:
    """Decode and check an AdmissionReview v1 request, or raise MalformedReviewError."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedReviewError("not_json", f"body is not valid JSON: {error}") from error
    if not isinstance(review, dict):
        raise MalformedReviewError("not_object", "body is not a JSON object")
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReviewError("no_request", "AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReviewError("no_uid", "request.uid is missing or not a string")

    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise MalformedReviewError(
            "wrong_type",
            f"apiVersion/kind is {review.get('apiVersion')!r}/{review.get('kind')!r}, "
            f"expected {API_VERSION}/{KIND}; list only v1 in admissionReviewVersions",
            uid,
        )
    kind = request.get("kind")
    if not isinstance(kind, dict) or kind.get("group") != "" or kind.get("kind") != "Pod":
        raise MalformedReviewError(
            "not_pod", f"request.kind is {kind!r}, expected a core Pod; check the rules", uid
        )
    pod = request.get("object")
    if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod":
        raise MalformedReviewError("not_pod", "request.object is not a Pod object", uid)
    fields = {name: request.get(name, "") for name in ("operation", "namespace", "subResource")}
    if not all(isinstance(value, str) for value in fields.values()):
        raise MalformedReviewError(
            "bad_field", "request.operation, namespace and subResource must be strings", uid
        )
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise MalformedReviewError("bad_field", f"request.dryRun is {dry_run!r}, not a bool", uid)
    return AdmissionRequest(
        uid=uid,
        operation=fields["operation"],
        namespace=fields["namespace"],
        sub_resource=fields["subResource"],
        dry_run=dry_run,
        pod=pod,
    )


def review_response(uid: str, mutation: Mutation | None = None) -> dict[str, Any]:
    """Build the AdmissionReview v1 response that allows the object, patched when needed."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if mutation is not None and mutation.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(mutation.patch)).decode()
    if mutation is not None and mutation.warnings:
        response["warnings"] = list(mutation.warnings)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _pod_identity(request: AdmissionRequest) -> str:
    # Controller-created pods have only generateName at CREATE time.
    metadata = request.pod.get("metadata")
    if not isinstance(metadata, dict):
        return f"{request.namespace}/?"
    name = metadata.get("name") or f"{metadata.get('generateName', '')}*"
    return f"{request.namespace}/{name}"


class RepeatLimiter:
    """Lets one log line per category through each interval and counts those held back."""

    def __init__(self, interval_seconds: float = REPEAT_LOG_INTERVAL_SECONDS) -> None:
        self._interval_seconds = interval_seconds
        self._last_logged: dict[str, float] = {}
        self._held_back: Counter[str] = Counter()

    def admit(self, category: str) -> int | None:
        """Return the lines held back since the last admitted one, or None to hold this back."""
        now = time.monotonic()
        last = self._last_logged.get(category)
        if last is not None and now - last < self._interval_seconds:
            self._held_back[category] += 1
            return None
        self._last_logged[category] = now
        return self._held_back.pop(category, 0)


class WebhookServer:
    """The aiohttp application on an HTTPS socket.

    ``limit_ranges`` supplies the CPU constraints of each namespace's LimitRanges. While it is
    not synced, pods are allowed unchanged. Without it (tests, or a caller that knows no
    namespace has a CPU LimitRange) the rules run without LimitRange constraints.
    """

    def __init__(
        self,
        settings: WebhookSettings,
        ssl_context: ssl.SSLContext,
        limit_ranges: LimitRangeIndex | None = None,
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._limit_ranges = limit_ranges
        self._repeats = RepeatLimiter()
        self.ready = False
        self.app = web.Application(client_max_size=settings.max_request_bytes)
        self.app.router.add_post("/mutate", self._mutate)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, shutdown_timeout_seconds: float = 10.0) -> None:
        """Bind the socket and start serving, then set ``port`` to the bound port."""
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=shutdown_timeout_seconds
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._settings.listen_address,
            self._settings.port,
            ssl_context=self._ssl_context,
        )
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise ListenError(
                f"cannot listen on {self._settings.listen_address}:{self._settings.port}: "
                f"{error}; pick another --port or --listen-address"
            ) from error
        # addresses contains the bound (host, port, ...) tuples, which resolves port 0.
        self.port = int(self._runner.addresses[0][1])
        log.info(
            "webhook server listening",
            extra={"address": self._settings.listen_address, "port": self.port},
        )

    async def stop(self) -> None:
        """Stop accepting connections and finish the requests in flight."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _warn_malformed(self, category: str, message: str, uid: str | None) -> None:
        held_back = self._repeats.admit(category)
        if held_back is None:
            return
        log.warning(
            "malformed admission request, allowing the pod unchanged"
            if uid
            else "malformed admission request without a uid, rejecting the call",
            extra={"reason": message, "uid": uid, "repeats_not_logged": held_back},
        )

    def _log_outcome(self, request: AdmissionRequest, mutation: Mutation) -> None:
        """Log the result at DEBUG, and one scaled pod per interval at INFO with a count.

        A log line per admission cost more CPU than the rules themselves in
        bench/webhook_latency.py, and the annotation on each pod records what changed.
        """
        held_back = self._repeats.admit("scaled") if mutation.patch else None
        level = logging.INFO if held_back is not None else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "uid": request.uid,
            "pod": _pod_identity(request),
            "tier": mutation.tier.value if mutation.tier else None,
            "reason": mutation.skip_reason,
            "operations": len(mutation.patch),
            "dry_run": request.dry_run,
        }
        if held_back is not None:
            fields["scaled_pods_not_logged"] = held_back
        message = "pod CPU requests scaled" if mutation.patch else "pod left unchanged"
        log.log(level, message, extra=fields)

    def _warn_unsynced(self, request: AdmissionRequest) -> None:
        held_back = self._repeats.admit("limit_ranges_unsynced")
        if held_back is None:
            return
        log.warning(
            "LimitRanges not listed yet, allowing the pod unchanged",
            extra={
                "uid": request.uid,
                "pod": _pod_identity(request),
                "repeats_not_logged": held_back,
            },
        )

    async def _mutate(self, http_request: web.Request) -> web.Response:
        try:
            body = await http_request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"body is larger than {self._settings.max_request_bytes} bytes"
            self._warn_malformed("too_large", message, None)
            return _json({"error": message}, status=413)
        try:
            request = parse_review(body)
        except MalformedReviewError as error:
            self._warn_malformed(error.category, str(error), error.uid)
            if error.uid is None:
                return _json({"error": str(error)}, status=400)
            return _json(review_response(error.uid))

        if request.operation != "CREATE" or request.sub_resource:
            log.debug(
                "not a pod creation, allowing unchanged",
                extra={"uid": request.uid, "operation": request.operation},
            )
            return _json(review_response(request.uid))
        limit_range = NO_LIMIT_RANGE
        if self._limit_ranges is not None:
            if not self._limit_ranges.synced:
                self._warn_unsynced(request)
                return _json(review_response(request.uid))
            limit_range = self._limit_ranges.for_namespace(request.namespace)
        try:
            mutation = mutate_pod(request.pod, self._settings, limit_range)
        except InvalidPodError as error:
            self._warn_malformed("invalid_pod", str(error), request.uid)
            return _json(review_response(request.uid))
        except Exception:
            # A bug in the rules must not turn into a failed admission call for every pod.
            log.exception(
                "mutation failed, allowing the pod unchanged",
                extra={"uid": request.uid, "pod": _pod_identity(request)},
            )
            return _json(review_response(request.uid))

        self._log_outcome(request, mutation)
        return _json(review_response(request.uid, mutation))

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(text="webhook configuration not registered yet", status=503)
        return web.Response(text="ok")
