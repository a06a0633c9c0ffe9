"""Kubernetes access for the asyncio services: a raw-JSON client and a list/watch reflector.

Built on ``kubernetes_asyncio`` for configuration and authentication (kubeconfig or
in-cluster service account) and its aiohttp transport. Objects stay plain dicts: the
generated models are slow to deserialise and the services read only a few fields.
"""

import asyncio
import contextlib
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from temper.errors import KubernetesError, ResourceExpiredError

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
EventHandler = Callable[[str, JsonObject], Awaitable[None] | None]
ObjectTransform = Callable[[JsonObject], JsonObject]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def status_message(error: KubernetesError) -> str:
    """Return the ``message`` of the API server's Status body in ``error``, or the error text.

    KubeClient keeps the first 500 bytes of an error body, so a long Status may arrive cut
    short. The message comes early in the body, so a pattern still finds it then.
    """
    text = str(error)
    _, separator, body = text.partition(f"HTTP {error.status}: ")
    if not separator:
        return text
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        match = re.search(r'"message":"((?:[^"\\]|\\.)*)', body)
        return match.group(1).replace('\\"', '"') if match else body
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return body


def object_key(obj: Mapping[str, Any]) -> str:
    """Return ``namespace/name`` (or ``name`` for cluster-scoped objects)."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "")
    return f"{namespace}/{name}" if namespace else str(name)


class KubeClient:
    """JSON requests against the API server with errors translated to KubernetesError."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._api = api_client

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> "KubeClient":
        """Load a kubeconfig file, or the in-cluster service account when none is given."""
        configuration = k8s_client.Configuration()
        try:
            if kubeconfig:
                await k8s_config.load_kube_config(
                    config_file=kubeconfig, client_configuration=configuration
                )
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
            else:
                await k8s_config.load_kube_config(client_configuration=configuration)
        except (k8s_config.ConfigException, OSError) as error:
            where = kubeconfig or "the default kubeconfig (~/.kube/config or $KUBECONFIG)"
            raise KubernetesError(
                f"cannot load Kubernetes credentials from {where}: {error}; pass --kubeconfig "
                "or run inside a pod with a service account"
            ) from error
        return cls(k8s_client.ApiClient(configuration=configuration))

    @property
    def host(self) -> str:
        """The API server URL."""
        return str(self._api.configuration.host)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout_seconds: float | None = 30.0,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        query = [(key, value) for key, value in (params or {}).items() if value is not None]
        timeout = aiohttp.ClientTimeout(total=timeout_seconds) if timeout_seconds else None
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=query,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except ApiException as error:
            raise KubernetesError(
                f"{method} {path} failed: {error.status} {error.reason}", status=error.status
            ) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise KubernetesError(
                f"{method} {path} failed: API server {self.host} unreachable ({error!r})"
            ) from error
        if response.status >= 400:
            detail = (await response.read())[:500].decode(errors="replace")
            response.release()
            error_type = ResourceExpiredError if response.status == 410 else KubernetesError
            raise error_type(
                f"{method} {path} failed: HTTP {response.status}: {detail}",
                status=response.status,
            )
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout_seconds: float = 30.0,
    ) -> JsonObject:
        """Send one request and return the decoded JSON body."""
        response = await self._send(
            method,
            path,
            params=params,
            body=body,
            content_type=content_type,
            timeout_seconds=timeout_seconds,
        )
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubernetesError(f"{method} {path} failed while reading: {error!r}") from error
        finally:
            response.release()
        decoded: JsonObject = orjson.loads(raw) if raw else {}
        return decoded

    async def stream(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> aiohttp.ClientResponse:
        """GET ``path`` and return the open response, to read a long body (logs) in chunks.

        Errors are raised as in :meth:`request`; the caller must release the response.
        """
        return await self._send("GET", path, params=params, timeout_seconds=timeout_seconds)

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> JsonObject:
        """GET ``path`` and return the JSON body."""
        return await self.request("GET", path, params=params)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JsonObject:
        """Apply a JSON merge patch (RFC 7386)."""
        return await self.request("PATCH", path, body=dict(patch), content_type=MERGE_PATCH)

    async def watch(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[JsonObject]:
        """Yield watch events (dicts with ``type`` and ``object``) until the stream ends."""
        response = await self._send(
            "GET", path, params={**params, "watch": "true"}, timeout_seconds=None
        )
        try:
            async for line in response.content:
                if line.strip():
                    event: JsonObject = orjson.loads(line)
                    yield event
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubernetesError(f"watch {path} broke: {error!r}") from error
        finally:
            response.release()


class Reflector:
    """Keeps a local copy of a list of objects in step with the API server.

    Lists, then watches from the list's resourceVersion with bookmarks. A ``410 Gone`` (as an
    HTTP status or as an ERROR event) triggers a relist at once. A broken connection or another
    failure triggers a relist after an exponential backoff. Objects that vanished meanwhile
    are reported as DELETED.

    ``transform``, when given, is applied to every listed or watched object before it is
    stored and passed to ``on_event``, so a caller that reads a few fields of large objects
    can keep only those. The key and the resourceVersion are read before the transform. If
    the transform raises, the error is logged and the object is kept unchanged.
    """

    def __init__(
        self,
        client: KubeClient,
        path: str,
        *,
        name: str,
        params: Mapping[str, Any] | None = None,
        on_event: EventHandler | None = None,
        transform: ObjectTransform | None = None,
        watch_timeout_seconds: int = 300,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._client = client
        self._path = path
        self._name = name
        self._params = dict(params or {})
        self._on_event = on_event
        self._transform = transform
        self._watch_timeout_seconds = watch_timeout_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self.store: dict[str, JsonObject] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        self._resource_version = ""
        self._changed = asyncio.Condition()
        self.revision = 0

    async def run(self) -> None:
        """List and watch forever; cancel the task to stop."""
        failures = 0
        while True:
            try:
                await self._list()
                failures = 0
                await self._watch_until_expired()
            except ResourceExpiredError:
                log.info("watch expired, relisting", extra={"reflector": self._name})
            except KubernetesError as error:
                failures += 1
                delay = min(self._max_backoff_seconds, 0.5 * 2 ** min(failures, 8))
                delay *= 0.8 + 0.4 * random.random()
                # Log the first failure of an episode at ERROR, repeats at DEBUG.
                level = logging.ERROR if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "list/watch failed, keeping the last known state and retrying",
                    extra={
                        "reflector": self._name,
                        "error": str(error),
                        "attempt": failures,
                        "retry_in_seconds": round(delay, 2),
                    },
                )
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        body = await self._client.get(self._path, self._params)
        self.relists += 1
        fresh = {object_key(item): self._transformed(item) for item in body.get("items") or []}
        self._resource_version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        vanished = [key for key in self.store if key not in fresh]
        for key in vanished:
            await self._emit("DELETED", self.store.pop(key))
        for key, item in fresh.items():
            event_type = "MODIFIED" if key in self.store else "ADDED"
            self.store[key] = item
            await self._emit(event_type, item)
        self.synced.set()
        await self._bump()

    async def _watch_until_expired(self) -> None:
        while True:
            params = {
                **self._params,
                "resourceVersion": self._resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": self._watch_timeout_seconds,
            }
            async for event in self._client.watch(self._path, params):
                event_type = event.get("type")
                obj = event.get("object") or {}
                if event_type == "ERROR":
                    if obj.get("code") == 410:
                        raise ResourceExpiredError(f"watch {self._path}: {obj.get('message')}")
                    raise KubernetesError(f"watch {self._path} error event: {obj}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._resource_version = str(version)
                if event_type not in ("ADDED", "MODIFIED", "DELETED"):
                    # A BOOKMARK only moves the resourceVersion.
                    continue
                key = object_key(obj)
                obj = self._transformed(obj)
                if event_type == "DELETED":
                    self.store.pop(key, None)
                else:
                    self.store[key] = obj
                await self._emit(str(event_type), obj)
                await self._bump()

    def _transformed(self, obj: JsonObject) -> JsonObject:
        if self._transform is None:
            return obj
        try:
            return self._transform(obj)
        except Exception:
            # Keeping the whole object costs memory but keeps the store complete.
            log.exception(
                "object transform failed, storing the object unchanged",
                extra={"reflector": self._name, "object": object_key(obj)},
            )
            return obj

    async def _emit(self, event_type: str, obj: JsonObject) -> None:
        if self._on_event is None:
            return
        try:
            result = self._on_event(event_type, obj)
            if result is not None:
                await result
        except Exception:
            # A bad object must not stop the watch for every other object.
            log.exception(
                "event handler failed",
                extra={"reflector": self._name, "object": object_key(obj), "event": event_type},
            )

    async def _bump(self) -> None:
        async with self._changed:
            self.revision += 1
            self._changed.notify_all()

    async def wait_for_change(self, after_revision: int, timeout_seconds: float) -> int:
        """Wait until ``revision`` exceeds ``after_revision`` or the timeout passes."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.revision > after_revision),
                    timeout_seconds,
                )
            return self.revision
