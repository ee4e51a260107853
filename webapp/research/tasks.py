"""The background task of a retraining run; the work itself is in ``webapp.research.retraining``.

It runs on the ``inference`` queue, so the workers that analyse studies also train. The task
takes the run id only (task arguments must be JSON values).
"""

from __future__ import annotations

import os
import socket

try:
    from django.tasks import TaskContext, task  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from django_tasks import TaskContext, task


@task(queue_name="inference", takes_context=True)
def run_training(context: TaskContext, run_id: int) -> dict[str, object]:
    """Claim and run training run ``run_id``; return its status for the task result."""
    # Imported here: the web process imports this module to enqueue, and the training code
    # pulls in scikit-learn and the radiomics pipeline.
    from webapp.research.retraining import execute_training_run

    worker_ids = context.task_result.worker_ids
    worker_id = worker_ids[-1] if worker_ids else f"{socket.gethostname()}:{os.getpid()}"
    return {"training_run_id": int(run_id), "status": execute_training_run(int(run_id), worker_id)}
