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
