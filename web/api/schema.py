"""The OpenAPI schema declares the error answers the API really gives (drf-spectacular's
postprocessing hook): drf-spectacular documents only the success of each operation.

What each operation can answer besides its success, by what it takes:
- 400: malformed input, on every operation (a NUL in any parameter is refused before any
  view, web/badinput.py; bodies and query parameters are validated by serializers and filters);
- 401: no or a wrong token (or session), on every operation;
- 403: a signed-in user who is not staff, on the operations that change something;
- 404: an object that does not exist (a path id, the telemetry's client, a page past the end,
  an account or group a body names);
- 409: a name already taken (web/api/errors.py);
- 429: throttled (web/api/throttles.py), on every operation.
"""

from __future__ import annotations

from typing import Any

from brokerauth import names

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
# DRF's validation answer: {"field": ["message", ...], ...} or {"detail": "..."}.
INVALID = {
    "type": "object",
    "additionalProperties": {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {}},
            {"type": "object"},
        ]
    },
}
SAFE = {"get", "head", "options"}
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
DESCRIPTIONS = {
    "400": ("Invalid", "Malformed input: what is wrong, by field."),
    "401": ("Error", "No valid token or session."),
    "403": ("Error", "Only staff users may do this."),
    "404": (
        "Invalid",
        "No such object (or page), or the body names an account or group that "
        "does not exist (then by field, as a 400).",
    ),
    "409": ("Invalid", "A name that is already taken, by field."),
    "429": ("Error", "Too many requests: retry after the Retry-After header's seconds."),
}
NOT_FOUND_WITHOUT_PATH_ID = {"/api/v1/telemetry/"}
# Posted by any signed-in user: they change nothing.
READ_ONLY_POSTS = {"/api/v1/explain/"}


def declare_errors(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR)
    schemas.setdefault("Invalid", INVALID)
    one_owner(schemas)
    name_patterns(schemas)
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method in METHODS:
                add_errors(operation, error_statuses(path, method, operation))
    return result


def one_owner(schemas: dict[str, Any]) -> None:
    """A rule names exactly one owner (RuleSerializer), the other is null; a PATCH names at
    most one."""
    owners = [{"required": ["account"]}, {"required": ["group"]}]
    if "RuleRequest" in schemas:
        schemas["RuleRequest"]["oneOf"] = owners
    for owner in ("account", "group"):
        schemas.get("Rule", {}).get("properties", {}).get(owner, {})["nullable"] = True
    if "PatchedRuleRequest" in schemas:
        schemas["PatchedRuleRequest"]["not"] = {"required": ["account", "group"]}


def name_patterns(schemas: dict[str, Any]) -> None:
    """Usernames and client ids are refused for what brokerauth/names.py says; the schema
    gives a pattern of safe names (a subset of what is accepted), so that a request the schema
    calls valid is one the API accepts. A blank client id or prefix means none."""
    for component, fields in (
        ("AccountRequest", ("username", "client_id", "client_id_prefix")),
        ("PatchedAccountRequest", ("username", "client_id", "client_id_prefix")),
    ):
        properties = schemas.get(component, {}).get("properties", {})
        for field in fields:
            if field in properties:
                pattern = names.SCHEMA_PATTERN
                if field != "username":
                    pattern = f"^$|{pattern}"
                properties[field]["pattern"] = pattern


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    statuses = ["400", "401"]
    if method not in SAFE and path not in READ_ONLY_POSTS:
        statuses.append("403")
    params = operation.get("parameters", [])
    paginated = any(p.get("name") == "page" and p.get("in") == "query" for p in params)
    writes = method not in SAFE and path not in READ_ONLY_POSTS
    if "{" in path or paginated or writes or path in NOT_FOUND_WITHOUT_PATH_ID:
        statuses.append("404")
    if writes:
        statuses.append("409")
    statuses.append("429")
    return statuses


def add_errors(operation: dict[str, Any], statuses: list[str]) -> None:
    responses = operation.setdefault("responses", {})
    for status in statuses:
        component, description = DESCRIPTIONS[status]
        responses.setdefault(
            status,
            {
                "description": description,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}
                },
            },
        )
