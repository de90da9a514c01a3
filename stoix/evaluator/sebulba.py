"""Evaluation on a host env pool (Sebulba): one episode per env, with a hard step cap."""

from typing import Callable, Dict, Tuple

import jax
import numpy as np

from stoix.base_types import Observation, Params, PRNGKey
from stoix.wrappers.host import HostVectorEnv

# (params, observation [N], key) -> (actions [N], next key), compiled on the evaluator device.
EvalStepFn = Callable[[Params, Observation, PRNGKey], Tuple[jax.Array, PRNGKey]]


def evaluate_on_host(
    env: HostVectorEnv,
    eval_step: EvalStepFn,
    params: Params,
    key: PRNGKey,
    max_steps: int,
) -> Tuple[Dict[str, np.ndarray], PRNGKey]:
    """Runs every env of `env` to the end of its first episode.

    Each env contributes exactly one episode, so short episodes are not over-represented. An
    env still running after `max_steps` steps (only possible when the cap is below the env's
    own limit) reports its return so far, summed from the training reward.

    Returns:
        {"episode_return": [N], "episode_length": [N]} and the advanced key.
    """
    step = env.reset()
    n = env.num_envs
    finished = np.zeros(n, bool)
    returns = np.zeros(n, np.float32)
    lengths = np.zeros(n, np.int32)
    running_return = np.zeros(n, np.float32)
    running_length = np.zeros(n, np.int32)
    device = next(iter(jax.tree.leaves(params)[0].devices()))
    for _ in range(max_steps):
        observation = Observation(
            agent_view=step.observation,
            action_mask=step.action_mask,
            step_count=np.zeros((n,), np.int32),
        )
        actions, key = eval_step(params, jax.device_put(observation, device), key)
        step = env.step(np.asarray(jax.device_get(actions)))
        running_return += np.where(step.valid, step.reward, 0.0).astype(np.float32)
        running_length += step.valid.astype(np.int32)
        ended = step.episode_done & ~finished
        returns[ended] = step.episode_return[ended]
        lengths[ended] = step.episode_length[ended]
        finished |= ended
        if finished.all():
            break
    returns[~finished] = running_return[~finished]
    lengths[~finished] = running_length[~finished]
    return {"episode_return": returns, "episode_length": lengths}, key
