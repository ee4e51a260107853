from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def disable_postgresql_jit(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Turn PostgreSQL's JIT compiler off for each new database connection.

    The worklist's status filter has a high estimated cost, which makes PostgreSQL JIT-compile
    it on every request: 2.3 s of compilation in a 2.5 s query at 10,000 cases
    (benchmarks/bench_worklist.py). Short web queries never gain from JIT.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET jit = off")


class ResearchConfig(AppConfig):
    name = "webapp.research"
    label = "research"
    verbose_name = "Research: worklist, exports, imports and dashboards"

    def ready(self) -> None:
        connection_created.connect(disable_postgresql_jit, dispatch_uid="research_disable_jit")
