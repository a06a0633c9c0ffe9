"""HTTP calls from the hub to peer planes, with a timeout, no redirects and bounded bodies.

Redirects are not followed, because a redirect would carry the bearer token to another
host. Errors are translated into :class:`PeerError` with the peer's name, and never contain
the token.
"""

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from yarl import URL

from temper.errors import TemperError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
USER_AGENT = "temper-plane-hub"


class PeerError(TemperError):
    """A peer plane could not be reached, or its response could not be used."""


@dataclass(frozen=True)
class PeerResponse:
    """A peer's HTTP response."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON; raise PeerError when it is not."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as error:
            raise PeerError(f"the response is not JSON: {error}") from error


class PeerClient:
    """One aiohttp session for every call to peers; created on first use."""

    def __init__(self, timeout_seconds: float, ca_file: Path | None) -> None:
        self.timeout_seconds = timeout_seconds
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(
                cafile=str(self._ca_file) if self._ca_file else None
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def request(
        self,
        peer: str,
        base_url: str,
        method: str,
        path: str,
        *,
        token: str,
        body: bytes | None = None,
    ) -> PeerResponse:
        """Send one request to ``base_url + path`` with ``token``; return the response.

        ``path`` must already be percent-encoded. Raises PeerError when the peer cannot be
        reached, times out or sends a body over 16 MiB.
        """
        url = URL(base_url.rstrip("/") + path, encoded=True)
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._client_session().request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as response:
                content = await response.content.read(MAX_BODY_BYTES + 1)
                if len(content) > MAX_BODY_BYTES:
                    raise PeerError(
                        f"peer {peer} sent more than {MAX_BODY_BYTES} bytes for {method} {path}"
                    )
                return PeerResponse(response.status, response.content_type, content)
        except TimeoutError as error:
            raise PeerError(
                f"peer {peer} ({base_url}) did not respond to {method} {path} within "
                f"{self.timeout_seconds:g} s"
            ) from error
        except aiohttp.ClientError as error:
            raise PeerError(
                f"peer {peer} ({base_url}) failed {method} {path}: {type(error).__name__}: {error}"
            ) from error

    async def get_json(self, peer: str, base_url: str, path: str, token: str) -> Any:
        """GET ``path`` and return its JSON body; raise PeerError unless the status is 200."""
        response = await self.request(peer, base_url, "GET", path, token=token)
        if response.status in (401, 403):
            raise PeerError(
                f"peer {peer} rejected the hub's token with HTTP {response.status} for GET "
                f"{path}; register the peer again with a valid viewer token"
            )
        if response.status != 200:
            text = response.body[:300].decode(errors="replace")
            raise PeerError(
                f"peer {peer} responded to GET {path} with HTTP {response.status}: {text}"
            )
        try:
            return response.json()
        except PeerError as error:
            raise PeerError(f"peer {peer} GET {path}: {error}") from error

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
            # Give the connector's transports a moment to close (aiohttp closes them late).
            await asyncio.sleep(0)
