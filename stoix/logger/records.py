"""What the facade hands every sink: the run's identity, the records of a period and of the
absolute metric, the protocol a sink implements, and the helpers more than one sink uses.

Sinks import this module and never the facade, so the facade can import every sink without a
cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

EPISODE_RETURN = "episode_return"
EPISODE_LENGTH = "episode_length"
STEP_COUNT = "step_count"


@dataclass(frozen=True)
class RunIdentity:
    """Names a run in the marl-eval hierarchy: env suite -> task -> system -> one run per seed.

    Attributes:
        system_name: The algorithm, e.g. ``"ff_ppo"``.
        env_name: The environment suite, e.g. ``"gymnax"``.
        task_name: The task within the suite, e.g. ``"cartpole"``.
        seeds: One marl-eval run per seed, named ``f"seed_{seed}"``.
        run_labels: Optional, one per seed: a run is then named ``f"{label}_seed_{seed}"``, and
            a seed may repeat under different labels (a hyperparameter sweep).
    """

    system_name: str
    env_name: str
    task_name: str
    seeds: tuple[int, ...]
    run_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Config hands over lists (and sometimes numpy ints); a tuple of ints keeps the identity
        # hashable and the run names stable.
        object.__setattr__(self, "seeds", tuple(int(seed) for seed in self.seeds))
        for name in ("system_name", "env_name", "task_name"):
            if not getattr(self, name):
                raise ValueError(f"RunIdentity.{name} must be a non-empty string.")
        object.__setattr__(self, "run_labels", tuple(str(label) for label in self.run_labels))
        if not self.seeds:
            raise ValueError("RunIdentity.seeds must name at least one seed.")
        if self.run_labels and len(self.run_labels) != len(self.seeds):
            raise ValueError("RunIdentity.run_labels must have one label per seed.")
        if len(set(self.run_names)) != len(self.seeds):
            raise ValueError(f"RunIdentity runs must be distinct, got {self.run_names}.")

    @property
    def run_names(self) -> tuple[str, ...]:
        """The marl-eval run name of each seed, in seed order."""
        if self.run_labels:
            pairs = zip(self.run_labels, self.seeds, strict=True)
            return tuple(f"{label}_seed_{seed}" for label, seed in pairs)
        return tuple(f"seed_{seed}" for seed in self.seeds)


class Progress(NamedTuple):
    """Where the run stands after a period, for the console's progress marker."""

    done: int  # periods finished, counting the one just logged
    total: int  # periods in the whole run
    eta_seconds: float  # wall-clock estimate for the remaining periods


class PeriodRecord(NamedTuple):
    """One period's metrics, validated and copied into plain floats and numpy arrays."""

    period: int
    step: int  # environment steps per seed reached at the end of the period
    train: tuple[dict[str, float], ...]  # [num_seeds] metric -> scalar
    evaluation: tuple[dict[str, np.ndarray], ...]  # [num_seeds] metric -> (num_episodes,)
    timing: dict[str, float]
    progress: Progress


class AbsoluteRecord(NamedTuple):
    """The final re-evaluation of the best parameters."""

    step: int  # step the absolute metric is plotted at (the last step logged)
    evaluation: tuple[dict[str, np.ndarray], ...]  # [num_seeds] metric -> (num_episodes,)


class Sink(Protocol):
    """A destination for logged metrics."""

    def write_period(self, record: PeriodRecord) -> None: ...

    def write_absolute(self, record: AbsoluteRecord) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# A numeric helper shared by the console and TensorBoard sinks.
# ---------------------------------------------------------------------------------------------


def episode_mean(values: np.ndarray) -> float:
    # An evaluation that finished no episode is a gap in the curve, not a crash or a warning.
    return float(np.mean(values)) if values.size else math.nan
