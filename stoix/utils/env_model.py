"""The environment as the search model: mctx over cloned env states.

AlphaZero-style planners (and SPO's particles) search with the real simulator. A Stoix env is
pure functions over an explicit state pytree, so a tree node's embedding is simply the env state
after the node's actions, and expanding a node is one `env.step`. The network only supplies
priors and leaf values.

At an episode end inside the search, the node's value is taken at the TRUE next observation
(`timestep.next_observation`) and a termination's zero discount makes it absorbing. Past a
truncation the env has auto-reset, so deeper simulations there see the next episode: time limits
are long compared with a search's depth, so this is left as it is.
"""

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import mctx

from stoix.base_types import Environment, Observation, Params

# (params, batched observation [B]) -> (prior logits [B, A], value [B])
Evaluate = Callable[[Params, Observation], Tuple[jax.Array, jax.Array]]

# The logit an action the env forbids gets: finite, so a softmax over an all-masked row stays
# defined; mctx also never expands actions marked invalid at the root.
MASKED_LOGIT = -1e9


def masked_logits(logits: jax.Array, observation: Observation) -> jax.Array:
    return jnp.where(observation.action_mask, logits, MASKED_LOGIT)


def search_root(
    evaluate: Evaluate, params: Params, env_state: Any, observation: Observation
) -> mctx.RootFnOutput:
    """The root of a batch of searches: each env's current state and observation [B]."""
    prior_logits, value = evaluate(params, observation)
    return mctx.RootFnOutput(
        prior_logits=masked_logits(prior_logits, observation), value=value, embedding=env_state
    )


def env_recurrent_fn(
    env: Environment, evaluate: Evaluate, gamma: float
) -> Callable[[Params, jax.Array, jax.Array, Any], Tuple[mctx.RecurrentFnOutput, Any]]:
    """mctx's recurrent function with `env` as the model: (params, key, action [B], env state
    [B]) -> (reward, discount, priors and value of the next state; the next env state)."""

    def recurrent_fn(
        params: Params, key: jax.Array, action: jax.Array, env_state: Any
    ) -> Tuple[mctx.RecurrentFnOutput, Any]:
        del key  # the env state carries its own randomness
        env_state, timestep = jax.vmap(env.step)(env_state, action)
        # One forward pass over both: priors where the search goes on (the auto-reset observation
        # after an episode end), the value at the true next observation.
        batch = timestep.observation.agent_view.shape[0]
        both = jax.tree.map(
            lambda a, b: jnp.concatenate([a, b]), timestep.observation, timestep.next_observation
        )
        logits, values = evaluate(params, both)
        prior_logits, value = logits[:batch], values[batch:]
        output = mctx.RecurrentFnOutput(
            reward=timestep.reward,
            discount=gamma * timestep.discount,
            prior_logits=masked_logits(prior_logits, timestep.observation),
            value=value,
        )
        return output, env_state

    return recurrent_fn
