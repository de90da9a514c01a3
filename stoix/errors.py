"""The run's exceptions: what a run raises when it cannot start or cannot go on.

The entry point (`stoix.utils.entry.hydra_main`) turns each into one line on stderr and an exit
status. This module is part of the floor: it imports nothing of ours, so every part can raise
these without importing the part that catches them.
"""


class ConfigError(ValueError):
    """A user-facing, one-line reason why a config cannot run."""


class TrainingDiverged(RuntimeError):
    """Training produced NaN or inf; the run stops before the bad state is checkpointed."""


class ThreadFailure(RuntimeError):
    """A Sebulba thread raised, or a queue wait timed out; carries the thread's traceback."""

    def __init__(self, thread_name: str, trace: str):
        super().__init__(f"{thread_name} failed:\n{trace.rstrip()}")
        self.thread_name = thread_name
