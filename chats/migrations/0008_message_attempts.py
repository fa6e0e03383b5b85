from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chats", "0007_chat_pins_archive_and_search"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
