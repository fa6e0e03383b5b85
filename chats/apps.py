from django.apps import AppConfig


class ChatsConfig(AppConfig):
    name = "chats"
    verbose_name = "Chats"

    def ready(self) -> None:
        from chats import schema  # noqa: F401  (registers the OpenAPI authentication extensions)
