"""How drf-spectacular describes our authentication in the OpenAPI document (imported by ChatsConfig.ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "chats.auth.SessionAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "Django session cookie; unsafe methods also need the X-CSRFToken header.",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "chats.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key from POST /api/keys."}


ERROR_SCHEMA = {
    "type": "object",
    "description": "Every API error: a machine code, a message for people, and per-field messages for 400s.",
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
    "required": ["error", "message"],
    "additionalProperties": True,
}
ERROR_STATUSES = {
    "400": "Invalid request (see `fields`), or malformed JSON.",
    "401": "No session, or an invalid session or API key.",
    "403": "Someone else's object, a missing CSRF token, or a read-only API key.",
    "404": "No such object.",
    "405": "Method not allowed.",
    "409": "Conflicts with the current state (a reply in progress, a finished reply...).",
    "413": "The request body is too large.",
    "415": "Not JSON.",
    "429": "Over a rate, concurrency or quota limit (see Retry-After).",
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: document the one error shape on every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_STATUSES.items():
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return result
