"""The callable every launcher job runs: a run that SLURM can stop and requeue.

On a time limit SLURM sends submitit's signal (SIGUSR2) ahead of the end; on preemption it sends
SIGTERM. Either way the run finishes its period, saves a checkpoint and raises `RunStopped`;
the job then hands the signal to submitit's own handler, which asks `checkpoint` for the
submission to requeue (the same run, resuming) and requeues the job. A job that SLURM itself
requeued (preemption with requeue, `SLURM_RESTART_COUNT` > 0) resumes in the same way.
"""

import dataclasses
import importlib
import os
import sys
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from stoix.checkpointing import find_resumable_run
from stoix.utils.config import to_plain
from stoix.utils.results_path import runs_root_of
from stoix.utils.stopping import RunStopped, forward_signals

RESUME = "logger.checkpointing.load_model=True"


class ResumableRun(Checkpointable):
    """Runs one launcher `Job` (stoix.launch.jobs) and resumes it after a requeue."""

    def __call__(self, job: Any, resume: bool = False) -> float:
        module = importlib.import_module(job.system.module)
        cfg = job.compose()
        restarted = resume or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        if restarted and find_resumable_run(runs_root_of(cfg, module.SYSTEM.name), to_plain(cfg)):
            job = dataclasses.replace(job, overrides=(*job.overrides, RESUME))
            cfg = job.compose()
        try:
            return float(module.run_experiment(cfg))
        except RunStopped as stopped:
            # The checkpoint is written; submitit's handler (if the job has one) requeues and
            # exits. Without one, the job ends with the one-line reason.
            print(f"stoix: {stopped}", file=sys.stderr, flush=True)
            forward_signals(stopped)
            raise

    def checkpoint(self, job: Any, resume: bool = False) -> DelayedSubmission:
        """What submitit requeues: the same job, resuming from its latest checkpoint."""
        return DelayedSubmission(self, job, resume=True)
