from typing import Any

from django.db import migrations, models

import operations.models


def forget_processes(apps: Any, schema_editor: Any) -> None:
    # Heartbeat rows are a few seconds of state each: the running processes write theirs
    # again (now keyed by a random process key rather than host and pid).
    apps.get_model("operations", "ProcessHeartbeat").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("operations", "0004_alter_delivery_options"),
    ]

    operations = [
        migrations.RunPython(forget_processes, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="processheartbeat",
            name="heartbeat_process",
        ),
        migrations.AddField(
            model_name="processheartbeat",
            name="key",
            field=models.CharField(
                default=operations.models.new_process_key, max_length=32, null=True, unique=True
            ),
        ),
        migrations.AddField(
            model_name="processheartbeat",
            name="vouched_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
