"""JSON schemas of the explorer, event stream, agent and rollout endpoints (OpenAPI 3.1)."""

from typing import Any

from plane.schemas import NODE_SCHEMA, NULLABLE_STRING, POD_SCHEMA, TIER_LOAD_SCHEMA, TIERS

JsonSchema = dict[str, Any]

# A namespace name (DNS label, RFC 1123).
NAMESPACE_SCHEMA: JsonSchema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
}

# A container name (DNS label).
CONTAINER_SCHEMA: JsonSchema = dict(NAMESPACE_SCHEMA)

WORKLOAD_KIND_SCHEMA: JsonSchema = {
    "type": "string",
    "enum": ["deployments", "statefulsets", "daemonsets"],
}

_NULLABLE_INTEGER: JsonSchema = {"type": ["integer", "null"]}
_NULLABLE_NUMBER: JsonSchema = {"type": ["number", "null"]}
_STRING_MAP: JsonSchema = {"type": "object", "additionalProperties": {"type": "string"}}

CONTAINER_STATE_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["state"],
    "properties": {
        "state": {"type": "string", "enum": ["running", "waiting", "terminated", "unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "startedAt": {"type": "string"},
        "finishedAt": {"type": "string"},
        "exitCode": {"type": "integer"},
        "signal": {"type": "integer"},
    },
}

CONTAINER_DETAIL_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["name", "kind", "image", "requests", "limits", "state", "ready", "restartCount"],
    "properties": {
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["init", "sidecar", "app", "ephemeral"]},
        "image": {"type": "string"},
        "imageID": NULLABLE_STRING,
        "containerID": NULLABLE_STRING,
        "requests": _STRING_MAP,
        "limits": _STRING_MAP,
        "state": CONTAINER_STATE_SCHEMA,
        "lastState": {"oneOf": [CONTAINER_STATE_SCHEMA, {"type": "null"}]},
        "ready": {"type": "boolean"},
        "restartCount": {"type": "integer"},
    },
}

OWNER_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["kind", "name", "apiVersion", "uid", "found"],
    "properties": {
        "kind": {"type": "string"},
        "name": {"type": "string"},
        "apiVersion": {"type": "string"},
        "uid": {"type": "string"},
        "found": {
            "type": ["boolean", "null"],
            "description": "False: the owner no longer exists; null: a kind the plane does "
            "not read (the chain stops there)",
        },
        "error": {"type": "string"},
    },
}

PRIORITY_CLASS_SCHEMA: JsonSchema = {
    "type": ["object", "null"],
    "required": ["name", "value", "preemptionPolicy", "globalDefault"],
    "properties": {
        "name": {"type": "string"},
        "value": _NULLABLE_INTEGER,
        "preemptionPolicy": {"type": "string"},
        "globalDefault": {"type": "boolean"},
        "description": NULLABLE_STRING,
    },
}

LAYER_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["expected", "reported", "agentError"],
    "properties": {
        "expected": {
            "type": "string",
            "description": "The scx_layered layer the agent's rules give the pod",
        },
        "reported": {
            **NULLABLE_STRING,
            "description": "The layer of the node agent's current layer config (its /config) "
            "that matches the pod's cgroup; null when the agent is not reachable",
        },
        "matchedBy": {
            "type": ["string", "null"],
            "enum": ["cgroup", "catch-all", None],
            "description": "cgroup: a CgroupPrefix or CgroupRegex names the pod; catch-all: "
            "no layer names it and it falls to the last layer",
        },
        "profileLayers": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Workload-profile layers that take some of the pod's threads",
        },
        "agentUrl": NULLABLE_STRING,
        "agentScheduler": {
            **NULLABLE_STRING,
            "description": "The agent's scheduler state; the layer is enforced only under "
            "scx_layered",
        },
        "agentError": {**NULLABLE_STRING, "description": "Why reported is null"},
    },
}

POD_DETAIL_SCHEMA: JsonSchema = {
    "type": "object",
    "required": [
        "namespace", "name", "uid", "node", "phase", "tier", "qosClass", "layer", "owners",
        "containers",
    ],
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "uid": {"type": "string"},
        "node": NULLABLE_STRING,
        "phase": {"type": "string"},
        "createdAt": NULLABLE_STRING,
        "terminating": {"type": "boolean"},
        "podIP": NULLABLE_STRING,
        "hostIP": NULLABLE_STRING,
        "labels": _STRING_MAP,
        "tier": {"type": "string", "enum": TIERS},
        "priorityClassName": NULLABLE_STRING,
        "priority": _NULLABLE_INTEGER,
        "priorityClass": PRIORITY_CLASS_SCHEMA,
        "priorityClassError": NULLABLE_STRING,
        "qosClass": {"type": "string", "enum": ["Guaranteed", "Burstable", "BestEffort"]},
        "cpuLimitMillicores": _NULLABLE_INTEGER,
        "layer": LAYER_SCHEMA,
        "owners": {
            "type": "array",
            "items": OWNER_SCHEMA,
            "description": "Controlling owners from the pod upwards, e.g. ReplicaSet then "
            "Deployment",
        },
        "conditions": {"type": "array", "items": {"type": "object"}},
        "containers": {"type": "array", "items": CONTAINER_DETAIL_SCHEMA},
    },
}  # fmt: skip

MANIFEST_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "The object as the API server returns it, without metadata.managedFields",
    "required": ["apiVersion", "kind", "metadata"],
}

_THREAD_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "tid": _NULLABLE_INTEGER,
        "tgid": _NULLABLE_INTEGER,
        "comm": NULLABLE_STRING,
        "cpuSecondsTotal": _NULLABLE_NUMBER,
        "runqDelaySecondsTotal": _NULLABLE_NUMBER,
        "timeslicesTotal": _NULLABLE_INTEGER,
        "voluntaryContextSwitchesTotal": _NULLABLE_INTEGER,
        "nonvoluntaryContextSwitchesTotal": _NULLABLE_INTEGER,
        "lastCpu": _NULLABLE_INTEGER,
    },
}

PERFORMANCE_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["namespace", "name", "uid", "node", "tier", "agent", "observed", "pod"],
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "uid": {"type": "string"},
        "node": {"type": "string"},
        "tier": {"type": "string", "enum": TIERS},
        "agent": {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "sampledAtSeconds": _NULLABLE_NUMBER,
                "ageSeconds": _NULLABLE_NUMBER,
                "intervalSeconds": _NULLABLE_NUMBER,
                "source": NULLABLE_STRING,
                "sourceDetail": NULLABLE_STRING,
            },
        },
        "observed": {"type": "boolean"},
        "reason": {**NULLABLE_STRING, "description": "Why observed is false"},
        "pod": {
            "type": ["object", "null"],
            "description": "Cumulative counters: take differences between two answers",
            "properties": {
                "tier": NULLABLE_STRING,
                "cgroup": NULLABLE_STRING,
                "threads": {"type": "integer"},
                "cpuSecondsTotal": _NULLABLE_NUMBER,
                "runqDelaySecondsTotal": _NULLABLE_NUMBER,
                "runqDelayP99Microseconds": _NULLABLE_INTEGER,
                "cpuSecondsByCpu": {"type": ["array", "null"], "items": {"type": "number"}},
                "containers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": NULLABLE_STRING,
                            "containerId": NULLABLE_STRING,
                            "cpuSecondsTotal": {"type": "number"},
                            "runqDelaySecondsTotal": {"type": "number"},
                            "threads": {"type": "array", "items": _THREAD_SCHEMA},
                        },
                    },
                },
            },
        },
        "tierTotals": {"type": ["object", "null"]},
        "linter": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "integer"},
            "description": "Node-wide placement linter counts since the agent started",
        },
    },
}

SCHEDULING_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["namespace", "name", "node", "tier", "priorityClass", "layer", "nodeTierLoad"],
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "node": NULLABLE_STRING,
        "tier": {"type": "string", "enum": TIERS},
        "priorityClassName": NULLABLE_STRING,
        "priority": _NULLABLE_INTEGER,
        "priorityClass": PRIORITY_CLASS_SCHEMA,
        "priorityClassError": NULLABLE_STRING,
        "qosClass": {"type": "string"},
        "cpuLimitMillicores": _NULLABLE_INTEGER,
        "layer": LAYER_SCHEMA,
        "nodeTierLoad": {
            "type": ["object", "null"],
            "properties": {
                "node": {"type": "string"},
                "scheduler": NULLABLE_STRING,
                "safeModeRequested": {"type": "boolean"},
                "unschedulable": {"type": "boolean"},
                "tierLoad": TIER_LOAD_SCHEMA,
                "tierLoadError": NULLABLE_STRING,
                "ageSeconds": _NULLABLE_NUMBER,
                "podTier": {
                    "type": ["object", "null"],
                    "description": "The tier-load entry of the pod's tier",
                },
                "error": {"type": "string"},
            },
        },
    },
}

REVISION_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["revision", "name", "current", "template"],
    "properties": {
        "revision": {"type": "integer"},
        "name": {
            "type": "string",
            "description": "The ReplicaSet (Deployment) or ControllerRevision holding it",
        },
        "createdAt": NULLABLE_STRING,
        "changeCause": {**NULLABLE_STRING, "description": "kubernetes.io/change-cause"},
        "replicas": {**_NULLABLE_INTEGER, "description": "Pods of a Deployment's ReplicaSet"},
        "current": {"type": "boolean"},
        "template": {
            "type": "object",
            "description": "The pod template (without the pod-template-hash label)",
        },
    },
}

REVISIONS_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["namespace", "kind", "name", "items"],
    "properties": {
        "namespace": {"type": "string"},
        "kind": {"type": "string"},
        "name": {"type": "string"},
        "items": {"type": "array", "items": REVISION_SCHEMA},
    },
}

DIFF_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["namespace", "kind", "name", "from", "to", "identical", "diff"],
    "properties": {
        "namespace": {"type": "string"},
        "kind": {"type": "string"},
        "name": {"type": "string"},
        "from": {"type": "integer"},
        "to": {"type": "integer"},
        "identical": {"type": "boolean"},
        "diff": {
            "type": "string",
            "description": "Unified diff of the two pod templates as YAML with sorted keys",
        },
    },
}

RESTART_RESULT_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["object", "action", "restartedAt"],
    "properties": {
        "object": {"type": "string"},
        "action": {"type": "string", "enum": ["restart"]},
        "restartedAt": {
            "type": "string",
            "description": "Value written to kubectl.kubernetes.io/restartedAt (RFC 3339)",
        },
    },
}

EVENT_DATA_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["type", "kind", "key", "object"],
    "properties": {
        "type": {"type": "string", "enum": ["ADDED", "MODIFIED", "DELETED"]},
        "kind": {"type": "string", "enum": ["Node", "Pod"]},
        "key": {"type": "string", "description": "Node name, or namespace/name of a Pod"},
        "object": {"oneOf": [NODE_SCHEMA, POD_SCHEMA]},
    },
}

EVENT_STREAM_SCHEMA: JsonSchema = {
    "type": "string",
    "description": "Server-sent events. Each change is 'id: <seq>', 'event: node' or "
    "'event: pod', and 'data: <JSON>' (x-temper-event-data), then a blank line. After the "
    "snapshot comes 'event: synced'; idle streams get ': keepalive' comments; a client that "
    "falls behind gets 'event: overflow' and the stream ends.",
    "x-temper-event-data": EVENT_DATA_SCHEMA,
}
