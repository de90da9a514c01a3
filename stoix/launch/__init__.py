"""Launching runs: SLURM and local sweeps through submitit, and the multi-host set-up.

* `jobs.py` — `launcher.py`'s machinery: the job plan of a sweep, submitit executors (SLURM,
  local, or a dry run), waiting for the jobs and summarising their outcomes;
* `resumable_job.py` — a submitit Checkpointable run that requeues itself when preempted;
* `multihost.py` — joining a `jax.distributed` job before a multi-host Anakin run starts.
"""
