"""The built-in web UI: static files served under ``/ui/`` that call only the public API.

The files live in ``plane/ui/static/`` and ship as package data. They are read once when the
application is built, so a missing or unreadable file stops the start with a clear error
instead of failing later in the browser. The UI routes sit outside ``/api/v1``: they are not
in the route registry, so they need no token, write no audit entries and do not appear in
the OpenAPI document. Every response carries a Content-Security-Policy that allows scripts,
styles, images and fetches from the plane's own origin only.
"""

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

from temper.errors import TemperError

log = logging.getLogger(__name__)

UI_PATH = "/ui/"

# Content types of the asset kinds the UI uses; files of other kinds are not served.
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        # The sign-in form is handled by script; without it the browser must not submit
        # the token anywhere.
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate on every load (cheap, with the ETag) so an upgraded plane serves new files.
    "Cache-Control": "no-cache",
}


class UiAssetError(TemperError):
    """The UI's static files are missing from the installed package."""


@dataclass(frozen=True)
class Asset:
    """One static file held in memory with its content type and ETag."""

    body: bytes
    content_type: str
    etag: str


def load_assets(directory: Traversable | None = None) -> dict[str, Asset]:
    """Read every servable file of ``directory`` (default: ``plane/ui/static``); raise
    UiAssetError if it cannot be read or has no index.html."""
    if directory is None:
        directory = resources.files(__name__) / "static"
    assets: dict[str, Asset] = {}
    try:
        entries = list(directory.iterdir())
    except OSError as error:
        raise UiAssetError(
            f"cannot read the web UI files in {directory}: {error}; reinstall the temper "
            "package so its plane/ui/static package data is present"
        ) from error
    for entry in entries:
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], f'"{digest}"')
    if "index.html" not in assets:
        raise UiAssetError(
            f"the web UI's index.html is missing from {directory}; reinstall the temper "
            "package so its plane/ui/static package data is present"
        )
    return assets


def _asset_response(request: web.Request, asset: Asset) -> web.Response:
    if asset.etag in request.headers.get("If-None-Match", ""):
        response = web.Response(status=304)
    else:
        response = web.Response(body=asset.body, content_type=asset.content_type)
        if asset.content_type.startswith("text/"):
            response.charset = "utf-8"
    response.headers["ETag"] = asset.etag
    response.headers.update(SECURITY_HEADERS)
    return response


def _not_found(name: str) -> web.Response:
    response = web.Response(
        status=404, text=f"UI file {name[:100]!r} not found; open {UI_PATH} for the web UI\n"
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def install_ui(app: web.Application) -> None:
    """Serve the UI at ``/ui/`` and redirect ``/`` and ``/ui`` to it."""
    assets = load_assets()

    async def redirect_to_ui(_request: web.Request) -> web.Response:
        raise web.HTTPFound(UI_PATH, headers=SECURITY_HEADERS)

    async def index(request: web.Request) -> web.Response:
        return _asset_response(request, assets["index.html"])

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = assets.get(name)
        if found is None:
            return _not_found(name)
        return _asset_response(request, found)

    app.router.add_get("/", redirect_to_ui)
    app.router.add_get("/ui", redirect_to_ui)
    app.router.add_get(UI_PATH, index)
    app.router.add_get(UI_PATH + "{name}", asset)
    log.debug("web UI installed", extra={"path": UI_PATH, "files": sorted(assets)})
