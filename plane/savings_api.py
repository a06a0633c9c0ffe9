"""The savings endpoints: their JSON schemas, handlers and route declarations."""

import logging
import re
from typing import Any

from aiohttp import web

from plane import savings
from plane.prices import HOURS_PER_MONTH, PriceBook, PriceSource
from plane.routes import Parameter, Route, RouteRegistry, error_response
from plane.savings_cache import SavingsCache
from plane.settings import PlaneSettings
from plane.store import Role
from temper.kube import KubeClient

log = logging.getLogger(__name__)

JsonSchema = dict[str, Any]

NAMESPACE_SCHEMA: JsonSchema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
}
_NAMESPACE_PATTERN = re.compile(NAMESPACE_SCHEMA["pattern"])

_MONEY: JsonSchema = {
    "type": ["number", "null"],
    "description": "In the price table's currency; null without a price table",
}

MEASURE_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["cpuMillicores", "perHour", "perMonth", "unpricedCpuMillicores", "pods"],
    "properties": {
        "cpuMillicores": {"type": "integer"},
        "perHour": _MONEY,
        "perMonth": _MONEY,
        "unpricedCpuMillicores": {
            "type": "integer",
            "description": "Part of cpuMillicores on machine types without a price",
        },
        "pods": {"type": "integer", "description": "Pods that contributed"},
    },
}

OPPORTUNITY_SCHEMA: JsonSchema = {
    **MEASURE_SCHEMA,
    "required": [*MEASURE_SCHEMA["required"], "underProvisionedCpuMillicores"],
    "properties": {
        **MEASURE_SCHEMA["properties"],
        "underProvisionedCpuMillicores": {
            "type": "integer",
            "description": "Sum of recommended minus current requests where the recommendation "
            "is higher; not part of the opportunity",
        },
    },
}

PRICE_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["cpuCoreHour", "nodeHour"],
    "properties": {"cpuCoreHour": {"type": "number"}, "nodeHour": {"type": "number"}},
}

RECOMMENDATION_SCHEMA: JsonSchema = {
    "type": ["object", "null"],
    "required": ["status", "error"],
    "properties": {
        "status": {"type": ["string", "null"], "enum": ["proposed", "accepted", "dismissed", None]},
        "computedAtSeconds": {"type": "number"},
        "applied": {
            "type": "boolean",
            "description": "Every recommended request equals the pod template's request",
        },
        "containers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "recommendedRequestMillicores", "templateRequestMillicores"],
                "properties": {
                    "name": {"type": "string"},
                    "recommendedRequestMillicores": {"type": "integer"},
                    "templateRequestMillicores": {"type": ["integer", "null"]},
                },
            },
        },
        "error": {
            "type": ["string", "null"],
            "description": "Why the annotation could not be read",
        },
    },
}

WORKLOAD_SAVINGS_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["namespace", "kind", "name", "realized", "opportunity", "recommendation"],
    "properties": {
        "namespace": {"type": "string"},
        "kind": {"type": "string", "description": "Kind of the controller, or Pod"},
        "name": {"type": "string"},
        "realized": MEASURE_SCHEMA,
        "opportunity": OPPORTUNITY_SCHEMA,
        "recommendation": RECOMMENDATION_SCHEMA,
    },
}

MACHINE_TYPE_SCHEMA: JsonSchema = {
    "type": "object",
    "required": [
        "machineType",
        "nodes",
        "priceSource",
        "price",
        "nodesNeededOriginal",
        "nodesNeededCurrent",
        "nodesFreed",
        "perHour",
        "perMonth",
    ],
    "properties": {
        "machineType": {
            "type": ["string", "null"],
            "description": "Value of node.kubernetes.io/instance-type; null for Nodes without it",
        },
        "nodes": {"type": "integer"},
        "priceSource": {"type": "string", "enum": [source.value for source in PriceSource]},
        "price": {**PRICE_SCHEMA, "type": ["object", "null"]},
        "nodesNeededOriginal": {
            "type": "integer",
            "description": "Nodes first-fit decreasing packing needs for the original requests",
        },
        "nodesNeededCurrent": {
            "type": "integer",
            "description": "Nodes first-fit decreasing packing needs for the current requests",
        },
        "nodesFreed": {"type": "integer"},
        "perHour": _MONEY,
        "perMonth": _MONEY,
    },
}

SAVINGS_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["pricing", "namespace", "realized", "opportunity", "namespaces", "problems"],
    "properties": {
        "pricing": {
            "type": "object",
            "required": ["configured", "path", "currency", "hoursPerMonth", "error"],
            "properties": {
                "configured": {"type": "boolean"},
                "path": {"type": ["string", "null"]},
                "currency": {"type": ["string", "null"]},
                "hoursPerMonth": {"type": "number", "const": HOURS_PER_MONTH},
                "error": {
                    "type": ["string", "null"],
                    "description": "Why the changed price table file was not loaded",
                },
            },
        },
        "namespace": {"type": ["string", "null"]},
        "realized": {
            "type": "object",
            "required": ["cpu", "nodes"],
            "properties": {
                "cpu": MEASURE_SCHEMA,
                "nodes": {
                    "type": "object",
                    "description": "Always for the whole cluster, whatever the namespace filter",
                    "required": [
                        "nodesFreed",
                        "perHour",
                        "perMonth",
                        "unpricedNodesFreed",
                        "machineTypes",
                    ],
                    "properties": {
                        "nodesFreed": {"type": "integer"},
                        "perHour": _MONEY,
                        "perMonth": _MONEY,
                        "unpricedNodesFreed": {"type": "integer"},
                        "machineTypes": {"type": "array", "items": MACHINE_TYPE_SCHEMA},
                    },
                },
            },
        },
        "opportunity": {
            "type": "object",
            "required": ["cpu", "recommendations", "dismissedRecommendations"],
            "properties": {
                "cpu": OPPORTUNITY_SCHEMA,
                "recommendations": {"type": "integer"},
                "dismissedRecommendations": {"type": "integer"},
            },
        },
        "namespaces": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["namespace", "realized", "opportunity", "workloads"],
                "properties": {
                    "namespace": {"type": "string"},
                    "realized": MEASURE_SCHEMA,
                    "opportunity": OPPORTUNITY_SCHEMA,
                    "workloads": {"type": "array", "items": WORKLOAD_SAVINGS_SCHEMA},
                },
            },
        },
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "error"],
                "properties": {"object": {"type": "string"}, "error": {"type": "string"}},
            },
        },
        "problemCount": {"type": "integer"},
    },
}

PRICES_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["configured", "path", "currency", "machineTypes", "default", "error"],
    "properties": {
        "configured": {"type": "boolean"},
        "path": {"type": ["string", "null"]},
        "currency": {"type": ["string", "null"]},
        "machineTypes": {"type": "object", "additionalProperties": PRICE_SCHEMA},
        "default": {**PRICE_SCHEMA, "type": ["object", "null"]},
        "error": {"type": ["string", "null"]},
    },
}


class SavingsService:
    """The savings cache, the price book and the last computed report."""

    def __init__(self, client: KubeClient, book: PriceBook, sync_timeout_seconds: float) -> None:
        self.cache = SavingsCache(client)
        self.book = book
        self.sync_timeout_seconds = sync_timeout_seconds
        self._memo: tuple[tuple[Any, ...], savings.SavingsReport] | None = None

    def report(self) -> savings.SavingsReport:
        """Return the computed report, recomputed only when objects or prices changed."""
        table = self.book.current()
        stamp = (self.cache.revision(), id(table))
        if self._memo is None or self._memo[0] != stamp:
            snapshot = savings.Snapshot(
                nodes=self.cache.nodes.store,
                pods=self.cache.pods.store,
                workloads={kind: r.store for kind, r in self.cache.workloads.items()},
            )
            self._memo = (stamp, savings.compute(snapshot, table))
        return self._memo[1]


SAVINGS_KEY = web.AppKey("savings", SavingsService)


async def _synced_service(request: web.Request) -> SavingsService | web.Response:
    service = request.app[SAVINGS_KEY]
    pending = await service.cache.wait_synced(service.sync_timeout_seconds)
    if pending:
        log.warning("savings watch cache not synced", extra={"kinds": pending})
        return error_response(
            502,
            f"the savings watch cache has not listed {', '.join(pending)} within "
            f"{service.sync_timeout_seconds:g} s; check that the API server is reachable and "
            "that the plane's ServiceAccount may list and watch them",
        )
    return service


async def get_savings(request: web.Request) -> web.Response:
    namespace = request.query.get("namespace")
    if namespace is not None and (len(namespace) > 63 or not _NAMESPACE_PATTERN.match(namespace)):
        return error_response(
            400, f"namespace {namespace[:100]!r} is not a valid namespace name (RFC 1123 label)"
        )
    service = await _synced_service(request)
    if isinstance(service, web.Response):
        return service
    body = service.report().body(namespace, service.book)
    return web.json_response(body)


async def get_prices(request: web.Request) -> web.Response:
    book = request.app[SAVINGS_KEY].book
    table = book.current()
    return web.json_response(
        {
            "configured": table is not None,
            "path": None if book.path is None else str(book.path),
            "currency": None if table is None else table.currency,
            "machineTypes": {}
            if table is None
            else {name: price.to_json() for name, price in sorted(table.machine_types.items())},
            "default": None if table is None or table.default is None else table.default.to_json(),
            "error": book.error,
        }
    )


def declare_routes(registry: RouteRegistry) -> None:
    """Add the savings routes to ``registry``."""
    viewer = Role.VIEWER
    registry.add(
        Route(
            "GET",
            "/savings",
            "getSavings",
            "Realized reclaim and identified opportunity, priced per machine type",
            viewer,
            get_savings,
            SAVINGS_SCHEMA,
            (Parameter("namespace", "query", "Only this namespace", NAMESPACE_SCHEMA, False),),
            description="Realized: CPU requests the overcommit webhook gave back (original "
            "minus current effective requests of pods with temper.codes/original-requests), "
            "and Nodes freed (first-fit decreasing packing of original versus current "
            "requests per machine type, always cluster-wide). Opportunity: current minus "
            "recommended requests of live pods whose workload has a temper.codes/"
            "recommendation that is not dismissed. Money per hour and per month (730 hours).",
        )
    )
    registry.add(
        Route(
            "GET",
            "/savings/prices",
            "getPrices",
            "The price table in use",
            viewer,
            get_prices,
            PRICES_SCHEMA,
        )
    )


def setup(app: web.Application, client: KubeClient, settings: PlaneSettings) -> None:
    """Attach the savings service to ``app``; its watch cache starts on the first request.

    Raises PriceTableError when the price table file is invalid.
    """
    book = PriceBook(settings.price_table_path)
    service = SavingsService(client, book, settings.kube_request_timeout_seconds)
    app[SAVINGS_KEY] = service

    async def close(_app: web.Application) -> None:
        await service.cache.close(settings.shutdown_timeout_seconds / 2)

    app.on_cleanup.append(close)
