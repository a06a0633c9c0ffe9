"""Reach the node agent of a Node: find it, read its JSON endpoints, open a trace capture.

The agent of a node is found in one of two ways (``plane/explorer_settings.py``):

- ``agent_url_template`` set: the template with ``{node_name}`` and ``{node_ip}`` (the Node's
  InternalIP, else its ExternalIP) filled in;
- otherwise the running pod in ``agent_namespace`` that matches ``agent_label_selector`` and
  is bound to the node, at ``http://<pod IP>:<agent_port>``.

Every failure becomes an :class:`AgentError` with the HTTP status the plane returns. That
is 502 when no agent is found, the connection fails or the agent returns an error, and 504
when it sends nothing within ``agent_timeout_seconds``. A trace capture that is already
running (409) and an invalid capture length (400) keep the agent's status.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from plane.explorer_settings import ExplorerSettings
from temper.errors import KubernetesError
from temper.kube import JsonObject, KubeClient

log = logging.getLogger(__name__)

# Agent statuses of /trace that the plane passes on unchanged.
TRACE_PASSTHROUGH_STATUSES = frozenset({400, 409})


class AgentError(Exception):
    """The agent of a node was not found, failed or timed out."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class AgentAnswer:
    """A JSON body read from an agent and the URL it came from."""

    url: str
    body: JsonObject


def _is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_address(node: Mapping[str, Any]) -> str | None:
    """Return the Node's InternalIP, else its ExternalIP, else None."""
    addresses = (node.get("status") or {}).get("addresses") or []
    for wanted in ("InternalIP", "ExternalIP"):
        for address in addresses:
            if address.get("type") == wanted and address.get("address"):
                return str(address["address"])
    return None


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _agent_message(body: bytes) -> str:
    """Return the ``error`` field of an agent's JSON error body, else the shortened text."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])[:500]
    return body[:500].decode(errors="replace").strip()


class AgentClient:
    """Finds node agents through the API server and talks HTTP to them."""

    def __init__(self, client: KubeClient, settings: ExplorerSettings) -> None:
        self._kube = client
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100), raise_for_status=False
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def base_url(self, node: str) -> str:
        """Find the agent's base URL for ``node``; raise AgentError (502) when none is found."""
        settings = self._settings
        if settings.agent_url_template:
            if "{node_ip}" not in settings.agent_url_template:
                return settings.agent_url_template.format(node_name=node)
            try:
                node_object = await self._kube.get(f"/api/v1/nodes/{quote(node, safe='')}")
            except KubernetesError as error:
                raise AgentError(502, f"cannot read node {node}: {error}") from error
            address = node_address(node_object)
            if address is None:
                raise AgentError(
                    502,
                    f"node {node} has no InternalIP or ExternalIP address to fill {{node_ip}} "
                    f"in --agent-url-template {settings.agent_url_template!r}",
                )
            return settings.agent_url_template.format(node_name=node, node_ip=_host(address))
        path = f"/api/v1/namespaces/{quote(settings.agent_namespace, safe='')}/pods"
        params = {
            "labelSelector": settings.agent_label_selector,
            "fieldSelector": f"spec.nodeName={node}",
        }
        try:
            listing = await self._kube.get(path, params)
        except KubernetesError as error:
            raise AgentError(
                502, f"cannot list the agent pods of node {node} in {settings.agent_namespace}: "
                f"{error}"
            ) from error  # fmt: skip
        candidates = [
            pod
            for pod in listing.get("items") or []
            if (pod.get("status") or {}).get("podIP")
            and (pod.get("status") or {}).get("phase") == "Running"
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
        ]
        if not candidates:
            raise AgentError(
                502,
                f"no running agent pod on node {node}: no pod in namespace "
                f"{settings.agent_namespace} with labels {settings.agent_label_selector!r} and "
                "a pod IP is bound to it; check the agent DaemonSet, or set "
                "--agent-namespace, --agent-label-selector or --agent-url-template",
            )
        candidates.sort(key=lambda pod: not _is_ready(pod))
        ip = str(candidates[0]["status"]["podIP"])
        return f"http://{_host(ip)}:{settings.agent_port}"

    async def get_json(self, node: str, path: str) -> AgentAnswer:
        """GET ``path`` (``/observe`` or ``/config``) from the agent of ``node``."""
        url = await self.base_url(node) + path
        timeout = aiohttp.ClientTimeout(total=self._settings.agent_timeout_seconds)
        limit = self._settings.agent_max_response_bytes
        try:
            async with self._http().get(url, timeout=timeout) as response:
                body = await _read_limited(response, limit, url)
                if response.status != 200:
                    raise AgentError(
                        502,
                        f"agent of node {node} at {url} answered HTTP {response.status}: "
                        f"{_agent_message(body)}",
                    )
        except TimeoutError as error:
            raise self._timeout(node, url, self._settings.agent_timeout_seconds) from error
        except aiohttp.ClientError as error:
            raise self._unreachable(node, url, error) from error
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise AgentError(
                502, f"agent of node {node} at {url} sent a body that is not JSON: {error}"
            ) from error
        if not isinstance(decoded, dict):
            raise AgentError(502, f"agent of node {node} at {url} sent invalid JSON: not an object")
        return AgentAnswer(url, decoded)

    async def open_trace(self, node: str, seconds: float) -> tuple[str, aiohttp.ClientResponse]:
        """Start a capture of ``seconds`` on the agent of ``node``.

        Returns the URL and the open 200 response. The caller streams its body and then
        releases it.
        """
        url = await self.base_url(node) + "/trace"
        wait = seconds + self._settings.agent_timeout_seconds
        # The agent sends its response once the capture has ended, the body right after.
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._settings.agent_timeout_seconds, sock_read=wait
        )
        try:
            response = await self._http().get(
                url, params={"seconds": f"{seconds:g}"}, timeout=timeout
            )
        except TimeoutError as error:
            raise self._timeout(node, url, wait) from error
        except aiohttp.ClientError as error:
            raise self._unreachable(node, url, error) from error
        if response.status == 200:
            return url, response
        try:
            body = await response.content.read(64 * 1024)
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            response.release()
        status = response.status if response.status in TRACE_PASSTHROUGH_STATUSES else 502
        raise AgentError(
            status,
            f"agent of node {node} at {url} answered HTTP {response.status}: "
            f"{_agent_message(body)}",
        )

    def _timeout(self, node: str, url: str, seconds: float) -> AgentError:
        log.warning("node agent timed out", extra={"node": node, "url": url, "seconds": seconds})
        return AgentError(
            504,
            f"agent of node {node} at {url} did not answer within {seconds:g} s "
            "(--agent-timeout-seconds)",
        )

    def _unreachable(self, node: str, url: str, error: BaseException) -> AgentError:
        log.warning(
            "node agent unreachable", extra={"node": node, "url": url, "error": repr(error)}
        )
        return AgentError(502, f"agent of node {node} at {url} is unreachable: {error}")


async def _read_limited(response: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise AgentError(
                502,
                f"the answer of {url} is larger than {limit} bytes (--agent-max-response-bytes)",
            )
        chunks.append(chunk)
    return b"".join(chunks)
