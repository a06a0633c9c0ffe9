"""JSON schemas and limits of the hub's routes (OpenAPI 3.1 dialect)."""

import re
from typing import Any

from plane.schemas import CLUSTER_SCHEMA
from plane.store import Role

JsonSchema = dict[str, Any]

PEER_TOKEN_HEADER = "X-Temper-Peer-Token"
CLUSTER_HEADER = "X-Temper-Cluster"
FORWARD_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_URL_LENGTH = 2048
MAX_TOKEN_LENGTH = 1024

PEER_NAME_SCHEMA: JsonSchema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
}
TOKEN_SCHEMA: JsonSchema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TOKEN_LENGTH,
    "pattern": "^[!-~]+$",
    "description": "A bearer token of the peer plane (printable ASCII, no spaces)",
}
PEER_NAME_PATTERN = re.compile(PEER_NAME_SCHEMA["pattern"])
TOKEN_PATTERN = re.compile(TOKEN_SCHEMA["pattern"])
# A path under /api/v1/ with an optional query, in URL characters only.
FORWARD_PATH_PATTERN = re.compile(
    r"^/api/v1/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*"
    r"(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"
)
NAMESPACE_PATTERN = PEER_NAME_PATTERN

WHOAMI_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["name", "role"],
    "properties": {
        "name": {"type": "string"},
        "role": {"type": "string", "enum": [role.value for role in Role]},
    },
}

CREDENTIAL_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["peer", "tokenName", "tokenRole", "updatedAtSeconds"],
    "properties": {
        "peer": {"type": "string"},
        "tokenName": {
            "type": ["string", "null"],
            "description": "The token's name on the peer; null when not verified",
        },
        "tokenRole": {"type": ["string", "null"]},
        "updatedAtSeconds": {"type": "number"},
    },
}

PEER_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["name", "url", "tokenName", "tokenRole", "createdBy", "updatedAtSeconds"],
    "properties": {
        "name": {"type": "string"},
        "url": {"type": "string"},
        "tokenName": {
            "type": ["string", "null"],
            "description": "Name of the hub's read token on the peer; null when not verified",
        },
        "tokenRole": {"type": ["string", "null"]},
        "createdBy": {"type": "string"},
        "updatedAtSeconds": {"type": "number"},
        "myCredential": {
            **CREDENTIAL_SCHEMA,
            "type": ["object", "null"],
            "description": "The caller's own token for this peer, if stored (never the token)",
        },
    },
}

PEER_REQUEST_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["url", "token"],
    "properties": {
        "url": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_URL_LENGTH,
            "description": "Base URL of the peer plane (http or https, no query)",
        },
        "token": {**TOKEN_SCHEMA, "description": "A viewer token of the peer, for reads"},
        "verify": {
            "type": "boolean",
            "description": "Check the token with the peer's /api/v1/whoami first (default "
            "true); it must have the viewer role",
        },
    },
    "additionalProperties": False,
}

CREDENTIAL_REQUEST_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["token"],
    "properties": {
        "token": {**TOKEN_SCHEMA, "description": "The caller's own token on the peer"},
        "verify": {
            "type": "boolean",
            "description": "Check the token with the peer's /api/v1/whoami first (default true)",
        },
    },
    "additionalProperties": False,
}

CLUSTER_STATUS_PROPERTIES: JsonSchema = {
    "name": {"type": "string"},
    "local": {"type": "boolean", "description": "This plane's own cluster"},
    "url": {"type": ["string", "null"]},
    "reachable": {"type": "boolean"},
    "error": {"type": ["string", "null"], "description": "Why the peer could not be read"},
    "latencyMilliseconds": {"type": ["number", "null"]},
}
CLUSTER_STATUS_SCHEMA: JsonSchema = {
    "type": "object",
    "required": list(CLUSTER_STATUS_PROPERTIES),
    "properties": CLUSTER_STATUS_PROPERTIES,
}


def with_cluster(item: JsonSchema) -> JsonSchema:
    return {
        **item,
        "required": ["cluster", *item.get("required", [])],
        "properties": {"cluster": {"type": "string"}, **item["properties"]},
    }


def aggregate(item: JsonSchema) -> JsonSchema:
    return {
        "type": "object",
        "required": ["items", "clusters"],
        "properties": {
            "items": {"type": "array", "items": with_cluster(item)},
            "clusters": {"type": "array", "items": CLUSTER_STATUS_SCHEMA},
        },
    }


HUB_CLUSTERS_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [*CLUSTER_STATUS_SCHEMA["required"], "summary"],
                "properties": {
                    **CLUSTER_STATUS_PROPERTIES,
                    "summary": {**CLUSTER_SCHEMA, "type": ["object", "null"]},
                },
            },
        }
    },
}

_SAVINGS_TOTALS: JsonSchema = {
    "type": ["object", "null"],
    "description": "The cluster's /api/v1/savings totals; null when unreachable",
    "properties": {
        "currency": {"type": ["string", "null"]},
        "realizedCpu": {"type": "object"},
        "realizedNodes": {"type": "object"},
        "opportunityCpu": {"type": "object"},
    },
}
HUB_SAVINGS_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [*CLUSTER_STATUS_SCHEMA["required"], "savings"],
                "properties": {**CLUSTER_STATUS_PROPERTIES, "savings": _SAVINGS_TOTALS},
            },
        }
    },
}


def list_of(item: JsonSchema) -> JsonSchema:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": item}},
    }
