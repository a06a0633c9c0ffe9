"""A route registry: each route declares its contract once, and the registry builds both
the aiohttp routes and the OpenAPI 3.1 document from it.

Authentication, authorisation and the audit log wrap every handler here, so a route cannot
forget them. A request without a valid ``Authorization: Bearer`` token gets 401, and a token
whose role is below the route's gets 403. Every request to a route, allowed or denied,
appends one audit entry.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from plane.store import Principal, Role, Store

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
API_VERSION = "1.0.0"
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
# Audit status of a request whose client went away before its handler finished (as nginx).
CLIENT_CLOSED_REQUEST = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JsonSchema = dict[str, Any]

ERROR_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


@dataclass(frozen=True)
class Parameter:
    """One path or query parameter of a route."""

    name: str
    location: str  # "path" or "query"
    description: str
    schema: JsonSchema = field(default_factory=lambda: {"type": "string"})
    required: bool = True


@dataclass(frozen=True)
class Route:
    """The contract of one endpoint; ``path`` is relative to ``/api/v1``."""

    method: str
    path: str
    operation_id: str
    summary: str
    role: Role
    handler: Handler
    response_schema: JsonSchema
    parameters: tuple[Parameter, ...] = ()
    request_schema: JsonSchema | None = None
    response_media_type: str = "application/json"
    description: str = ""
    # Further error statuses the route may return, each with when it does.
    extra_responses: tuple[tuple[int, str], ...] = ()


def error_response(status: int, message: str) -> web.Response:
    """Return a JSON error body ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status)


class RouteRegistry:
    """The routes of the API, in declaration order."""

    def __init__(self, title: str, description: str) -> None:
        self.title = title
        self.description = description
        self.routes: list[Route] = []

    def add(self, route: Route) -> None:
        """Register ``route``; raise ValueError on a duplicate method and path."""
        for existing in self.routes:
            if (existing.method, existing.path) == (route.method, route.path):
                raise ValueError(f"route {route.method} {route.path} is declared twice")
        self.routes.append(route)

    def install(self, app: web.Application, store: Store) -> None:
        """Add every route to ``app``, each wrapped in authentication, roles and audit."""
        app.on_response_prepare.append(_audit_streamed_response)
        for route in self.routes:
            app.router.add_route(
                route.method,
                API_PREFIX + route.path,
                _guarded(route, store),
                name=route.operation_id,
            )

    def openapi(self) -> dict[str, Any]:
        """Build the OpenAPI 3.1 document of the registered routes."""
        paths: dict[str, dict[str, Any]] = {}
        for route in self.routes:
            paths.setdefault(API_PREFIX + route.path, {})[route.method.lower()] = _operation(route)
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": API_VERSION, "description": self.description},
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": {"Error": ERROR_SCHEMA},
            },
            "security": [{"bearer": []}],
        }


def _operation(route: Route) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "Success",
            "content": {route.response_media_type: {"schema": route.response_schema}},
        },
        "400": {"description": "Invalid parameter or body", "content": error},
        "401": {"description": "Missing or unknown bearer token", "content": error},
        "403": {"description": f"The token's role is below {route.role.value}", "content": error},
    }
    if any(parameter.location == "path" for parameter in route.parameters):
        responses["404"] = {"description": "Object not found", "content": error}
    responses["502"] = {"description": "The Kubernetes API server failed", "content": error}
    for status, description in route.extra_responses:
        responses[str(status)] = {"description": description, "content": error}
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": (route.description + "\n\n" if route.description else "")
        + f"Required role: {route.role.value}.",
        "x-temper-role": route.role.value,
        "responses": responses,
    }
    if route.parameters:
        operation["parameters"] = [
            {
                "name": parameter.name,
                "in": parameter.location,
                "required": parameter.required or parameter.location == "path",
                "description": parameter.description,
                "schema": parameter.schema,
            }
            for parameter in route.parameters
        ]
    if route.request_schema is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": route.request_schema}},
        }
    return operation


def _bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _guarded(route: Route, store: Store) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        token = _bearer_token(request)
        # NOTE: the SQLite calls run on the event loop. Each is one small indexed statement,
        # but a slow disk would stall every request while an audit entry is written.
        principal = store.authenticate(token) if token else None
        if principal is None:
            reason = "missing bearer token" if token is None else "unknown bearer token"
            _audit(store, request, route, None, outcome="denied", status=401, detail=reason)
            response = error_response(
                401,
                f"{reason}; send 'Authorization: Bearer <token>' with a token from "
                "'temper plane token create'",
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response

        if not principal.role.allows(route.role):
            reason = f"role {principal.role.value} may not {route.operation_id}"
            _audit(store, request, route, principal, outcome="denied", status=403, detail=reason)
            return error_response(403, f"{reason}: it requires role {route.role.value} or above")

        request[PRINCIPAL_KEY] = principal
        pending = _PendingAudit(store, route, principal)
        request[AUDIT_KEY] = pending
        try:
            result = await route.handler(request)
        except web.HTTPException as error:
            pending.write(request, outcome="failed", status=error.status, detail=error.text or "")
            raise
        except asyncio.CancelledError:
            # The server cancels a handler whose client went away (when handler cancellation
            # is on): whatever the handler did so far is still recorded.
            pending.write(
                request,
                outcome="failed",
                status=CLIENT_CLOSED_REQUEST,
                detail="the client went away before the request finished",
            )
            raise
        except Exception as error:
            log.exception(
                "handler failed",
                extra={"operation": route.operation_id, "path": request.path},
            )
            pending.write(request, outcome="failed", status=500, detail=repr(error))
            return error_response(500, f"internal error in {route.operation_id}: {error!r}")

        outcome = "allowed" if result.status < 400 else "failed"
        detail = str(getattr(result, "text", "") or "")[:1000] if outcome == "failed" else ""
        pending.write(request, outcome=outcome, status=result.status, detail=detail)
        return result

    return handle


@dataclass
class _PendingAudit:
    """The audit entry of one authorised request, written once: when a streamed response
    starts (so a long stream is recorded at its start), else when the handler ends."""

    store: Store
    route: Route
    principal: Principal
    written: bool = False

    def write(self, request: web.Request, *, outcome: str, status: int, detail: str) -> None:
        if not self.written:
            self.written = True
            _audit(
                self.store,
                request,
                self.route,
                self.principal,
                outcome=outcome,
                status=status,
                detail=detail,
            )


AUDIT_KEY = web.RequestKey("audit", _PendingAudit)


async def _audit_streamed_response(request: web.Request, response: web.StreamResponse) -> None:
    """Write the audit entry of a request whose handler streams its response, at the start."""
    pending = request.get(AUDIT_KEY)
    if pending is not None:
        outcome = "allowed" if response.status < 400 else "failed"
        pending.write(request, outcome=outcome, status=response.status, detail="")


def _audit(
    store: Store,
    request: web.Request,
    route: Route,
    principal: Principal | None,
    *,
    outcome: str,
    status: int,
    detail: str,
) -> None:
    store.append_audit(
        principal=principal,
        method=request.method,
        path=request.path_qs,
        operation=route.operation_id,
        outcome=outcome,
        status=status,
        detail=detail,
    )
