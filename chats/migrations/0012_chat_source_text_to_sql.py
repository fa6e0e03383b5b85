from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chats", "0011_chat_source_connect_rpc")]

    operations = [
        migrations.AlterField(
            model_name="chat",
            name="source",
            field=models.CharField(
                choices=[
                    ("web", "Web UI or chatsite API"),
                    ("openai", "OpenAI-compatible API"),
                    ("rag_stream", "RAG chat stream API (seed 002)"),
                    ("search_session", "Search session API (seed 003)"),
                    ("connect_rpc", "Connect-RPC stream (seed 000)"),
                    ("text_to_sql", "Text-to-SQL API (seed 001)"),
                ],
                default="web",
                max_length=16,
            ),
        ),
    ]
