"""Adapter from Craftax (Matthews et al., 2024) to the Stoix suite-adapter interface.

Craftax generates a whole new world at every reset, and on jax 0.10.2's CPU backend that
generation is several times slower than a step. `EpisodeEnv` computes the auto-reset state for
every env at every step (a branch-free select), so regenerating per env would make world
generation the cost of every step. Auto-resets here are *optimistic* instead: a vmapped call
over N envs generates only ceil(N / reset_ratio) fresh worlds, and each env that finishes an
episode takes one of them at random. Envs that finish on the same step may start in the same
world; with episodes hundreds of steps long and the default ratio of 16 that is rare, and every
world is still a fresh draw. The initial reset of each env generates its own world.

Termination is the game's own end (death, lava, and in full Craftax a beaten boss); the
`max_timesteps` limit of the env params (10,000 steps in Craftax-Classic) is a truncation, so
targets bootstrap through it.
"""

import math
from typing import Any, Tuple

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

from stoix.base_types import Action, EnvSpec, Observation, PRNGKey
from stoix.wrappers.episode import AdapterStep


class CraftaxAdapter:
    """One Craftax env (a NoAutoReset variant) behind `reset`, `auto_reset` and `step`.

    Args:
        scenario: a Craftax env name, e.g. "Craftax-Classic-Symbolic-v1".
        reset_ratio: envs per freshly generated world in a batched auto-reset (>= 1; with 1,
            as many worlds are generated as there are envs, at full generation cost).
    """

    def __init__(self, scenario: str, reset_ratio: int = 16):
        from craftax.craftax_env import make_craftax_env_from_name

        if int(reset_ratio) < 1:
            raise ValueError(f"craftax needs reset_ratio >= 1, got {reset_ratio}")
        self.reset_ratio = int(reset_ratio)
        self._env = make_craftax_env_from_name(scenario, auto_reset=False)
        self._params = self._env.default_params
        num_actions = int(self._env.action_space(self._params).n)
        self._num_actions = num_actions
        self.spec = EnvSpec(
            observation_shape=tuple(self._env.observation_space(self._params).shape),
            action_kind="discrete",
            num_actions=num_actions,
            max_episode_steps=int(self._params.max_timesteps),
        )
        self.auto_reset = custom_vmap(self.reset)
        self.auto_reset.def_vmap(self._optimistic_reset_rule)

    def _observation(self, obs: jax.Array, state: Any) -> Observation:
        return Observation(
            agent_view=obs.astype(jnp.float32),
            action_mask=jnp.ones((self._num_actions,), bool),
            step_count=jnp.asarray(state.timestep, jnp.int32),
        )

    def reset(self, key: PRNGKey) -> Tuple[Any, Observation]:
        obs, state = self._env.reset_env(key, self._params)
        return state, self._observation(obs, state)

    def _optimistic_reset_rule(
        self, num_envs: int, in_batched: Any, keys: PRNGKey
    ) -> Tuple[Tuple[Any, Observation], Any]:
        (keys_batched,) = in_batched
        if not keys_batched:
            keys = jnp.broadcast_to(keys, (num_envs,) + keys.shape)
        num_worlds = max(1, math.ceil(num_envs / self.reset_ratio))
        worlds = jax.vmap(self.reset)(keys[:num_worlds])
        # fold_in gives each env a choice independent of the world keys it may share.
        choice = jax.vmap(
            lambda k: jax.random.randint(jax.random.fold_in(k, 1), (), 0, num_worlds)
        )(keys)
        out = jax.tree.map(lambda leaf: leaf[choice], worlds)
        return out, jax.tree.map(lambda _: True, out)

    def step(self, state: Any, action: Action, key: PRNGKey) -> Tuple[Any, AdapterStep]:
        obs, next_state, reward, _, _ = self._env.step_env(key, state, action, self._params)
        # The env's own terminal test counts its time limit as game over; asked about the same
        # state at time 0 it answers for death, lava or a beaten boss only.
        terminated = self._env.is_terminal(next_state.replace(timestep=0), self._params)
        truncated = jnp.logical_and(
            next_state.timestep >= self._params.max_timesteps, jnp.logical_not(terminated)
        )
        return next_state, AdapterStep(
            observation=self._observation(obs, next_state),
            reward=jnp.asarray(reward, jnp.float32),
            terminated=jnp.asarray(terminated, bool),
            truncated=jnp.asarray(truncated, bool),
        )
