"""How every discrete-action Q-learner of the family acts: ε-greedy in its Q-values.

Shared by the DQN family (`dqn_base`) and the PQN family (`pqn_base`, rec_pqn, Sebulba PQN):
training explores with a scheduled ε, evaluation acts greedily or with
`system.evaluation_epsilon`.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from stoix.base_types import Observation, Params, PRNGKey
from stoix.system_api import EvalActFn


def epsilon_greedy(
    key: PRNGKey, q_values: jax.Array, action_mask: jax.Array, epsilon: jax.Array
) -> jax.Array:
    """Greedy action, or with probability ε a uniformly random VALID action."""
    explore_key, random_key = jax.random.split(key)
    greedy = jnp.argmax(q_values, axis=-1)
    random = jax.random.categorical(random_key, jnp.where(action_mask, 0.0, -jnp.inf), axis=-1)
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, random, greedy).astype(jnp.int32)


def q_eval_act(apply: Callable[..., Any], evaluation_epsilon: float) -> Callable[[bool], EvalActFn]:
    """Evaluation acting of a feed-forward Q-network: greedy, or ε-greedy with
    `evaluation_epsilon`. Evaluation passes no noise rngs, so noisy layers act with their mean
    weights."""

    def eval_act(greedy: bool) -> EvalActFn:
        epsilon = jnp.asarray(0.0 if greedy else evaluation_epsilon)

        def act(params: Params, observation: Observation, key: PRNGKey) -> jax.Array:
            q = apply(params, observation).q_values
            return epsilon_greedy(key, q, observation.action_mask, epsilon)

        return act

    return eval_act
