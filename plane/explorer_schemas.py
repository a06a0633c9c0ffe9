"""JSON schemas of the explorer, event stream, agent and rollout endpoints (OpenAPI 3.1)."""

from plane.schemas import (
    NODE_SCHEMA,
    NULLABLE_STRING,
    POD_SCHEMA,
    TIER_LOAD_SCHEMA,
    TIERS,
    JsonSchema,
)

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

_STRING: JsonSchema = {"type": "string"}
_INTEGER: JsonSchema = {"type": "integer"}
_BOOLEAN: JsonSchema = {"type": "boolean"}
_NULLABLE_INTEGER: JsonSchema = {"type": ["integer", "null"]}
_NULLABLE_NUMBER: JsonSchema = {"type": ["number", "null"]}
_STRING_MAP: JsonSchema = {"type": "object", "additionalProperties": _STRING}


def _object(required: list[str], properties: JsonSchema) -> JsonSchema:
    """Return the schema of an object with ``properties``, of which ``required`` must be set."""
    return {"type": "object", "required": required, "properties": properties}


def _described(schema: JsonSchema, description: str) -> JsonSchema:
    """Return a copy of ``schema`` with ``description``."""
    return {**schema, "description": description}


CONTAINER_STATE_SCHEMA: JsonSchema = _object(
    ["state"],
    {
        "state": {"type": "string", "enum": ["running", "waiting", "terminated", "unknown"]},
        "reason": _STRING,
        "message": _STRING,
        "startedAt": _STRING,
        "finishedAt": _STRING,
        "exitCode": _INTEGER,
        "signal": _INTEGER,
    },
)

CONTAINER_DETAIL_SCHEMA: JsonSchema = _object(
    ["name", "kind", "image", "requests", "limits", "state", "ready", "restartCount"],
    {
        "name": _STRING,
        "kind": {"type": "string", "enum": ["init", "sidecar", "app", "ephemeral"]},
        "image": _STRING,
        "imageID": NULLABLE_STRING,
        "containerID": NULLABLE_STRING,
        "requests": _STRING_MAP,
        "limits": _STRING_MAP,
        "state": CONTAINER_STATE_SCHEMA,
        "lastState": {"oneOf": [CONTAINER_STATE_SCHEMA, {"type": "null"}]},
        "ready": _BOOLEAN,
        "restartCount": _INTEGER,
    },
)

OWNER_SCHEMA: JsonSchema = _object(
    ["kind", "name", "apiVersion", "uid", "found"],
    {
        "kind": _STRING,
        "name": _STRING,
        "apiVersion": _STRING,
        "uid": _STRING,
        "found": _described(
            {"type": ["boolean", "null"]},
            "False: the owner no longer exists; null: a kind the plane does not read (the "
            "chain stops there)",
        ),
        "error": _STRING,
    },
)

PRIORITY_CLASS_SCHEMA: JsonSchema = {
    "type": ["object", "null"],
    "required": ["name", "value", "preemptionPolicy", "globalDefault"],
    "properties": {
        "name": _STRING,
        "value": _NULLABLE_INTEGER,
        "preemptionPolicy": _STRING,
        "globalDefault": _BOOLEAN,
        "description": NULLABLE_STRING,
    },
}

LAYER_SCHEMA: JsonSchema = _object(
    ["expected", "reported", "agentError"],
    {
        "expected": _described(_STRING, "The scx_layered layer the agent's rules give the pod"),
        "reported": _described(
            NULLABLE_STRING,
            "The layer of the node agent's current layer config (its /config) that matches "
            "the pod's cgroup; null when the agent is not reachable",
        ),
        "matchedBy": {
            "type": ["string", "null"],
            "enum": ["cgroup", "catch-all", None],
            "description": "cgroup: a CgroupPrefix or CgroupRegex names the pod; catch-all: "
            "no layer names it and it falls to the last layer",
        },
        "profileLayers": {
            "type": "array",
            "items": _STRING,
            "description": "Workload-profile layers that take some of the pod's threads",
        },
        "agentUrl": NULLABLE_STRING,
        "agentScheduler": _described(
            NULLABLE_STRING,
            "The agent's scheduler state; the layer is enforced only under scx_layered",
        ),
        "agentError": _described(NULLABLE_STRING, "Why reported is null"),
    },
)

POD_DETAIL_SCHEMA: JsonSchema = _object(
    [
        "namespace", "name", "uid", "node", "phase", "tier", "qosClass", "layer", "owners",
        "containers",
    ],
    {
        "namespace": _STRING,
        "name": _STRING,
        "uid": _STRING,
        "node": NULLABLE_STRING,
        "phase": _STRING,
        "createdAt": NULLABLE_STRING,
        "terminating": _BOOLEAN,
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
)  # fmt: skip

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

PERFORMANCE_SCHEMA: JsonSchema = _object(
    ["namespace", "name", "uid", "node", "tier", "agent", "observed", "pod"],
    {
        "namespace": _STRING,
        "name": _STRING,
        "uid": _STRING,
        "node": _STRING,
        "tier": {"type": "string", "enum": TIERS},
        "agent": {
            "type": "object",
            "properties": {
                "url": _STRING,
                "sampledAtSeconds": _NULLABLE_NUMBER,
                "ageSeconds": _NULLABLE_NUMBER,
                "intervalSeconds": _NULLABLE_NUMBER,
                "source": NULLABLE_STRING,
                "sourceDetail": NULLABLE_STRING,
            },
        },
        "observed": _BOOLEAN,
        "reason": _described(NULLABLE_STRING, "Why observed is false"),
        "pod": {
            "type": ["object", "null"],
            "description": "Cumulative counters: take differences between two answers",
            "properties": {
                "tier": NULLABLE_STRING,
                "cgroup": NULLABLE_STRING,
                "threads": _INTEGER,
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
            "additionalProperties": _INTEGER,
            "description": "Node-wide placement linter counts since the agent started",
        },
    },
)

SCHEDULING_SCHEMA: JsonSchema = _object(
    ["namespace", "name", "node", "tier", "priorityClass", "layer", "nodeTierLoad"],
    {
        "namespace": _STRING,
        "name": _STRING,
        "node": NULLABLE_STRING,
        "tier": {"type": "string", "enum": TIERS},
        "priorityClassName": NULLABLE_STRING,
        "priority": _NULLABLE_INTEGER,
        "priorityClass": PRIORITY_CLASS_SCHEMA,
        "priorityClassError": NULLABLE_STRING,
        "qosClass": _STRING,
        "cpuLimitMillicores": _NULLABLE_INTEGER,
        "layer": LAYER_SCHEMA,
        "nodeTierLoad": {
            "type": ["object", "null"],
            "properties": {
                "node": _STRING,
                "scheduler": NULLABLE_STRING,
                "safeModeRequested": _BOOLEAN,
                "unschedulable": _BOOLEAN,
                "tierLoad": TIER_LOAD_SCHEMA,
                "tierLoadError": NULLABLE_STRING,
                "ageSeconds": _NULLABLE_NUMBER,
                "podTier": _described(
                    {"type": ["object", "null"]}, "The tier-load entry of the pod's tier"
                ),
                "error": _STRING,
            },
        },
    },
)

REVISION_SCHEMA: JsonSchema = _object(
    ["revision", "name", "current", "template"],
    {
        "revision": _INTEGER,
        "name": _described(_STRING, "The ReplicaSet (Deployment) or ControllerRevision holding it"),
        "createdAt": NULLABLE_STRING,
        "changeCause": _described(NULLABLE_STRING, "kubernetes.io/change-cause"),
        "replicas": _described(_NULLABLE_INTEGER, "Pods of a Deployment's ReplicaSet"),
        "current": _BOOLEAN,
        "template": _described(
            {"type": "object"}, "The pod template (without the pod-template-hash label)"
        ),
    },
)

# The path parameters that name a workload, as the revision endpoints return them.
_WORKLOAD_FIELDS: JsonSchema = {"namespace": _STRING, "kind": _STRING, "name": _STRING}

REVISIONS_SCHEMA: JsonSchema = _object(
    ["namespace", "kind", "name", "items"],
    {**_WORKLOAD_FIELDS, "items": {"type": "array", "items": REVISION_SCHEMA}},
)

DIFF_SCHEMA: JsonSchema = _object(
    ["namespace", "kind", "name", "from", "to", "identical", "diff"],
    {
        **_WORKLOAD_FIELDS,
        "from": _INTEGER,
        "to": _INTEGER,
        "identical": _BOOLEAN,
        "diff": _described(
            _STRING, "Unified diff of the two pod templates as YAML with sorted keys"
        ),
    },
)

RESTART_RESULT_SCHEMA: JsonSchema = _object(
    ["object", "action", "restartedAt"],
    {
        "object": _STRING,
        "action": {"type": "string", "enum": ["restart"]},
        "restartedAt": _described(
            _STRING, "Value written to kubectl.kubernetes.io/restartedAt (RFC 3339)"
        ),
    },
)

EVENT_DATA_SCHEMA: JsonSchema = _object(
    ["type", "kind", "key", "object"],
    {
        "type": {"type": "string", "enum": ["ADDED", "MODIFIED", "DELETED"]},
        "kind": {"type": "string", "enum": ["Node", "Pod"]},
        "key": _described(_STRING, "Node name, or namespace/name of a Pod"),
        "object": {"oneOf": [NODE_SCHEMA, POD_SCHEMA]},
    },
)

EVENT_STREAM_SCHEMA: JsonSchema = {
    "type": "string",
    "description": "Server-sent events. Each change is 'id: <seq>', 'event: node' or "
    "'event: pod', and 'data: <JSON>' (x-temper-event-data), then a blank line. After the "
    "snapshot comes 'event: synced'; idle streams get ': keepalive' comments; a client that "
    "falls behind gets 'event: overflow' and the stream ends.",
    "x-temper-event-data": EVENT_DATA_SCHEMA,
}
