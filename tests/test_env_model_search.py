"""A search with the env as its model, on a two-step deterministic env whose best first action
is known: it finds that action, and gives the visit counts mctx gives for the same tree."""

from typing import Tuple

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from stoix.base_types import EnvSpec, Observation
from stoix.utils.env_model import env_recurrent_fn, search_root
from stoix.wrappers.episode import AdapterStep, EpisodeEnv

# Step 0: action 1 pays 1, action 0 pays 0. Step 1: action 0 pays 10 after action 1 was taken
# first, 2 after action 0 was taken first; action 1 pays nothing. The episode terminates after
# two steps, so the best play is 1 then 0, worth 11.
REWARDS = jnp.array([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [10.0, 0.0]]])  # [step, first, a]


class TwoSteps:
    spec = EnvSpec(observation_shape=(3,), action_kind="discrete", num_actions=2)

    def _observation(self, t: jax.Array, first: jax.Array) -> Observation:
        view = jnp.stack([t, first, 1.0 - first]).astype(jnp.float32)
        return Observation(view, jnp.ones((2,), bool), t.astype(jnp.int32))

    def reset(self, key: jax.Array) -> Tuple[Tuple[jax.Array, jax.Array], Observation]:
        state = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        return state, self._observation(*state)

    def step(self, state, action, key) -> Tuple[Tuple[jax.Array, jax.Array], AdapterStep]:
        t, first = state
        first = jnp.where(t == 0, action, first)
        reward = REWARDS[t, first, action]
        state = (t + 1, first)
        return state, AdapterStep(
            self._observation(*state), reward, terminated=t + 1 >= 2, truncated=jnp.array(False)
        )


def _uniform(params, observation: Observation):
    batch = observation.agent_view.shape[0]
    return jnp.zeros((batch, 2)), jnp.zeros((batch,))


def _search(recurrent_fn, root, num_simulations=64):
    return mctx.muzero_policy(
        params=(),
        rng_key=jax.random.PRNGKey(0),
        root=root,
        recurrent_fn=recurrent_fn,
        num_simulations=num_simulations,
        dirichlet_fraction=0.0,
        temperature=0.0,
    )


def test_the_search_finds_the_best_first_action_with_the_env_as_its_model():
    env = EpisodeEnv(TwoSteps())
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 3))
    root = search_root(_uniform, (), env_state, timestep.observation)
    output = _search(env_recurrent_fn(env, _uniform, gamma=1.0), root)
    np.testing.assert_array_equal(output.action, [1, 1, 1])
    visits = output.search_tree.summary().visit_counts
    assert bool(jnp.all(visits[:, 1] > 4 * visits[:, 0])), visits
    # The root's value estimate approaches the best return, 11.
    assert bool(jnp.all(output.search_tree.summary().value > 6.0))

    # The same tree searched through a hand-written model of the same MDP gives the same visits.
    def by_hand(params, key, action, embedding):
        t, first = embedding
        first = jnp.where(t == 0, action, first)
        reward = REWARDS[jnp.minimum(t, 1), first, action]
        output = mctx.RecurrentFnOutput(
            reward=jnp.where(t < 2, reward, 0.0),
            discount=jnp.where(t + 1 >= 2, 0.0, 1.0),
            prior_logits=jnp.zeros((3, 2)),
            value=jnp.zeros((3,)),
        )
        return output, (t + 1, first)

    start = (jnp.zeros((3,), jnp.int32), jnp.zeros((3,), jnp.int32))
    expected = _search(
        by_hand,
        mctx.RootFnOutput(prior_logits=root.prior_logits, value=root.value, embedding=start),
    )
    np.testing.assert_array_equal(visits, expected.search_tree.summary().visit_counts)
