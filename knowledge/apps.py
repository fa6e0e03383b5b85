from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    verbose_name = "Documents and retrieval"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from chatsite import jobs

        jobs.register(
            jobs.JobKind(
                name="ingest",
                task="knowledge.ingest_document",
                run="knowledge.ingest:run_ingestion",
                unqueueable="knowledge.actions:fail_unqueued_ingestion",
            )
        )

        from knowledge.vectors import load_sqlite_vec

        # Every SQLite connection gets sqlite-vec's functions (vec_distance_cosine) for vector search.
        connection_created.connect(load_sqlite_vec, dispatch_uid="knowledge.load_sqlite_vec")
