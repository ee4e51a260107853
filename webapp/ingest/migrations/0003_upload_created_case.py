from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0002_identity_mapping"),
    ]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="created_case",
            field=models.BooleanField(
                default=False,
                help_text="The upload created its case; an upload that stores nothing deletes "
                "such a case again.",
            ),
        ),
    ]
