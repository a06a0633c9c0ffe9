"""JSON schemas of the API's request and response bodies (OpenAPI 3.1 dialect)."""

from typing import Any

JsonSchema = dict[str, Any]

TIERS = ["critical", "high", "normal", "low", "background"]

# A Kubernetes object name (DNS subdomain, RFC 1123).
NAME_SCHEMA: JsonSchema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 253,
    "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
}

NULLABLE_STRING: JsonSchema = {"type": ["string", "null"]}

TIER_LOAD_SCHEMA: JsonSchema = {
    "type": ["object", "null"],
    "required": ["timestampSeconds", "nodeCpuMillicores", "tiers"],
    "properties": {
        "timestampSeconds": {"type": "number"},
        "nodeCpuMillicores": {"type": "integer"},
        "tiers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "requestedCpuMillicores": {"type": "integer"},
                    "usedCpuMillicores": {"type": "integer"},
                    "runqDelayP99Microseconds": {"type": "integer"},
                    "protectionCapacityMillicores": {"type": "integer"},
                    "pods": {"type": "integer"},
                },
            },
        },
    },
}

NODE_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["name", "allocatable", "unschedulable", "scheduler", "safeModeRequested"],
    "properties": {
        "name": {"type": "string"},
        "allocatable": {"type": "object", "additionalProperties": {"type": "string"}},
        "unschedulable": {"type": "boolean"},
        "scheduler": {
            **NULLABLE_STRING,
            "description": "Value of temper.codes/scheduler, written by the node agent",
        },
        "safeModeRequested": {"type": "boolean"},
        "tierLoad": {
            **TIER_LOAD_SCHEMA,
            "description": "Parsed temper.codes/tier-load; null when missing or invalid",
        },
        "tierLoadError": {**NULLABLE_STRING, "description": "Why tierLoad could not be parsed"},
    },
}

POD_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["namespace", "name", "tier", "layer"],
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "node": NULLABLE_STRING,
        "phase": {"type": "string"},
        "tier": {"type": "string", "enum": TIERS},
        "cpuLimitMillicores": {"type": ["integer", "null"]},
        "layer": {
            "type": "string",
            "description": "scx_layered layer derived from the agent's rules: the tier, or "
            "<tier>-limited for a non-critical pod whose containers all have a CPU limit",
        },
        "owner": {
            "type": "object",
            "properties": {"kind": {"type": "string"}, "name": {"type": "string"}},
        },
        "terminating": {"type": "boolean"},
    },
}

WORKLOAD_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["namespace", "kind", "name", "pods", "tiers", "nodes"],
    "properties": {
        "namespace": {"type": "string"},
        "kind": {"type": "string", "description": "Kind of the controller, or Pod"},
        "name": {"type": "string"},
        "pods": {"type": "integer"},
        "tiers": {"type": "object", "additionalProperties": {"type": "integer"}},
        "nodes": {"type": "array", "items": {"type": "string"}},
    },
}

CLUSTER_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["name", "nodes", "pods", "podsPerTier", "fleetSafeModeRequested"],
    "properties": {
        "name": {"type": "string"},
        "nodes": {"type": "integer"},
        "unschedulableNodes": {"type": "integer"},
        "nodesInSafeMode": {"type": "array", "items": {"type": "string"}},
        "fleetSafeModeRequested": {"type": "boolean"},
        "pods": {"type": "integer"},
        "podsPerTier": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}


def list_of(item: JsonSchema) -> JsonSchema:
    """Return the schema of ``{"items": [item, ...]}``."""
    return {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": item}},
    }


ACTION_RESULT_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["object", "action"],
    "properties": {"object": {"type": "string"}, "action": {"type": "string"}},
}

_POD_OUTCOME: JsonSchema = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "namespace": {"type": "string"},
            "name": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
}

DRAIN_REQUEST_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "gracePeriodSeconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": 86400,
            "description": "Grace period of each eviction in seconds; default: the setting "
            "--eviction-grace-period-seconds, else each pod's own",
        },
        "timeoutSeconds": {
            "type": "number",
            "minimum": 0,
            "maximum": 3600,
            "description": "Seconds to keep retrying evictions a PodDisruptionBudget blocks "
            "and to wait for evicted pods to go; default: the setting --drain-timeout-seconds; "
            "0: one pass",
        },
    },
    "additionalProperties": False,
}

DRAIN_RESULT_SCHEMA: JsonSchema = {
    "type": "object",
    "required": [
        "node", "evicted", "blocked", "failed", "skipped", "complete", "attempts",
        "timeoutSeconds",
    ],
    "properties": {
        "node": {"type": "string"},
        "evicted": {
            "type": "array",
            "items": {
                **_POD_OUTCOME["items"],
                "properties": {
                    **_POD_OUTCOME["items"]["properties"],
                    "deleted": {
                        "type": "boolean",
                        "description": "The pod was gone before the drain returned",
                    },
                },
            },
        },
        "blocked": {
            "type": "array",
            "items": {
                **_POD_OUTCOME["items"],
                "properties": {
                    **_POD_OUTCOME["items"]["properties"],
                    "attempts": {"type": "integer", "description": "Evictions tried"},
                },
            },
            "description": "Pods a PodDisruptionBudget still kept at the timeout (HTTP 429 "
            "from the Eviction API), with its last answer",
        },
        "failed": _POD_OUTCOME,
        "skipped": _POD_OUTCOME,
        "complete": {
            "type": "boolean",
            "description": "Every pod that had to go is gone: none blocked or failed, every "
            "evicted pod deleted",
        },
        "attempts": {"type": "integer", "description": "Eviction passes made"},
        "timeoutSeconds": {"type": "number"},
    },
}  # fmt: skip
