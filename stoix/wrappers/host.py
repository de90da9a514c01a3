"""The host-side vector environment that Sebulba actors step: numpy in, numpy out.

Sebulba runs environments that are not written in JAX (envpool, gymnasium). Every suite is
adapted to `HostVectorEnv`, a batch of `num_envs` environments stepped together from one actor
thread, so the actors, the learner and the evaluator never see a suite's own API.

Episodes follow the "next-step" auto-reset of envpool and gymnasium's vector envs: the step that
ends an episode returns the episode's true final observation, and the NEXT step of that env
ignores its action and returns the first observation of a new episode. That reset step is
reported with `valid=False` (reward 0): learners drop it from their losses. Because the final
observation is kept, a value target can bootstrap from it after a truncation.
"""

from typing import NamedTuple, Protocol

import numpy as np

from stoix.base_types import EnvSpec


class HostStep(NamedTuple):
    """One step of every env of a `HostVectorEnv`; every array has a leading [num_envs] axis."""

    observation: np.ndarray  # [N, *observation_shape], what the policy acts on next
    reward: np.ndarray  # [N] float32; the training reward (clipped where the suite clips)
    terminated: np.ndarray  # [N] bool; the episode ended for good: no bootstrap
    truncated: np.ndarray  # [N] bool; cut by a time limit: bootstrap from `observation`
    valid: np.ndarray  # [N] bool; False on the reset step that follows an episode's end
    action_mask: np.ndarray  # [N, num_actions] bool; all True where the suite has no mask
    # Statistics of the episodes that ended at this step (read where `episode_done`):
    episode_done: np.ndarray  # [N] bool; a whole episode (for Atari: a whole game) ended
    episode_return: np.ndarray  # [N] float32; its undiscounted, unclipped return
    episode_length: np.ndarray  # [N] int32; its length in agent steps


class HostVectorEnv(Protocol):
    """A batch of host environments stepped together (one per actor thread or evaluator)."""

    spec: EnvSpec
    num_envs: int

    def reset(self) -> HostStep:
        """Starts every env; the returned step has reward 0 and `valid=True`."""
        ...

    def step(self, actions: np.ndarray) -> HostStep:
        """Steps every env with `actions` [N] (int) or [N, action_dim] (float)."""
        ...

    def close(self) -> None:
        """Releases the suite's threads or processes; calling it twice is harmless."""
        ...
