"""Running mean and variance of observations, shared by every replica of a seed.

Kept in the learner state rather than in an env wrapper: one set of statistics per seed (not per
env), checkpointed with everything else, and handed to the evaluator with the actor's params so
evaluation sees observations exactly as training does.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from stoix.base_types import Observation


class RunningStatistics(NamedTuple):
    mean: jax.Array  # observation shape
    variance: jax.Array  # observation shape
    count: jax.Array  # () float32, samples seen


def init_statistics(shape: tuple[int, ...]) -> RunningStatistics:
    return RunningStatistics(
        mean=jnp.zeros(shape, jnp.float32),
        variance=jnp.ones(shape, jnp.float32),
        count=jnp.zeros((), jnp.float32),
    )


def update_statistics(
    stats: RunningStatistics,
    batch: jax.Array,
    average_replicas: Callable[[jax.Array], jax.Array] = lambda x: x,
) -> RunningStatistics:
    """Merges a batch [..., *shape] into the statistics (Chan et al.'s parallel update).

    `average_replicas` averages the batch moments over replicas (e.g. `pmean_replicas`) so all
    replicas of a seed keep identical statistics.
    """
    feature_ndim = stats.mean.ndim
    flat = batch.reshape((-1,) + batch.shape[batch.ndim - feature_ndim :])
    batch_mean = average_replicas(flat.mean(axis=0))
    batch_var = average_replicas(jnp.mean(jnp.square(flat - batch_mean), axis=0))
    batch_count = average_replicas(jnp.asarray(flat.shape[0], jnp.float32))
    total = stats.count + batch_count
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * batch_count / total
    m2 = stats.variance * stats.count + batch_var * batch_count
    m2 = m2 + jnp.square(delta) * stats.count * batch_count / total
    return RunningStatistics(mean=mean, variance=m2 / total, count=total)


def normalise(stats: RunningStatistics, x: jax.Array, clip: float = 10.0) -> jax.Array:
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.variance + 1e-8), -clip, clip)


def observe(stats: RunningStatistics, observation: Observation, enabled: bool) -> Observation:
    """What the networks see: the observation, normalised when that is switched on."""
    if not enabled:
        return observation
    return observation._replace(agent_view=normalise(stats, observation.agent_view))
