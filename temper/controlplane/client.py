"""A small synchronous JSON client for the local control plane, authenticated as its admin."""

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temper.errors import KubernetesError

JsonObject = dict[str, Any]


class AdminClient:
    """Plain-dict requests against one API server with a client certificate."""

    def __init__(self, server: str, ca_path: Path, cert_path: Path, key_path: Path) -> None:
        self.server = server.rstrip("/")
        self._context = ssl.create_default_context(cafile=str(ca_path))
        self._context.load_cert_chain(str(cert_path), str(key_path))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout_seconds: float = 30.0,
    ) -> JsonObject:
        """Send one request and return the decoded body; raise KubernetesError on failure."""
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(
                request, timeout=timeout_seconds, context=self._context
            ) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:500].decode(errors="replace")
            raise KubernetesError(
                f"{method} {path} failed: HTTP {error.code}: {detail}", status=error.code
            ) from error
        except (urllib.error.URLError, OSError) as error:
            raise KubernetesError(f"{method} {path} failed: {error}") from error
        decoded: JsonObject = json.loads(raw) if raw else {}
        return decoded

    def get(self, path: str, params: Mapping[str, str] | None = None) -> JsonObject:
        """GET ``path``."""
        return self.request("GET", path, params=params)

    def create(self, path: str, body: JsonObject, *, dry_run: bool = False) -> JsonObject:
        """POST ``body`` to the collection at ``path``."""
        return self.request("POST", path, body, params={"dryRun": "All"} if dry_run else None)

    def merge_patch(self, path: str, patch: JsonObject) -> JsonObject:
        """Apply a JSON merge patch."""
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")
