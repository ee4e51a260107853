"""Create the database cache table, so that `migrate` alone prepares a new database.

The settings use Django's database cache (for the login-failure counters); without this step
every deployment would also need `manage.py createcachetable`.
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    # createcachetable skips tables that already exist.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("core", "0002_create_role_groups")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
