from django.apps import AppConfig


class ChatsConfig(AppConfig):
    name = "chats"
    verbose_name = "Chats"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from chats import schema  # noqa: F401  (registers the OpenAPI authentication extensions)
        from chats.search import rebuild_search_index_after_migrate

        # Search on SQLite: Django's table rebuilds drop triggers, so the FTS5 index is checked after each migrate.
        post_migrate.connect(rebuild_search_index_after_migrate, sender=self, dispatch_uid="chats.search_index")
