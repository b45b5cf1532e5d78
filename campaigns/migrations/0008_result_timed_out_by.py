from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0007_result_leased_origin"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="result",
            index=models.Index(
                condition=models.Q(("state", 3)), fields=["session_id"], name="result_timed_out_by"
            ),
        ),
    ]
