from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chats", "0005_message_attachments"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
