from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    verbose_name = "Models and workflows"

    def ready(self) -> None:
        from chatsite import jobs

        # Replies are generated here; chats submits them by kind (chatsite.jobs) without importing this app's code.
        jobs.register(
            jobs.JobKind(
                name="reply",
                task="pipelines.generate_reply",
                run="pipelines.runner:run_reply_here",
                unqueueable="chats.lifecycle:fail_unstarted_reply",
            )
        )
