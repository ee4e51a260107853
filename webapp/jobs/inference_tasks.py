"""The background task that runs inference jobs; the work itself is in ``webapp.jobs.runner``.

The task takes the job id only (task arguments must be JSON). It may run more than once for one
job: lease checks and retries send further tasks, and the runner's atomic claim makes every
extra run a no-op unless the job is claimable.
"""

from __future__ import annotations

import os
import socket
from typing import Any

try:
    from django.tasks import TaskContext, task  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from django_tasks import TaskContext, task


@task(queue_name="inference", takes_context=True)
def run_inference_job(context: TaskContext, job_id: int) -> dict[str, Any]:
    """Claim and run inference job ``job_id``; return the outcome for the task result."""
    # Imported here, not at module level: the web process imports this module to enqueue the
    # task, and the runner pulls in the whole pipeline (PyTorch, pyradiomics), seconds of imports.
    from webapp.jobs.runner import run_job

    worker_ids = context.task_result.worker_ids
    # db_worker records its --worker-id on the task result; other backends may not.
    worker_id = worker_ids[-1] if worker_ids else f"{socket.gethostname()}:{os.getpid()}"
    outcome = run_job(int(job_id), worker_id)
    return {"job_id": outcome.job_id, "status": outcome.status, "detail": outcome.detail}
