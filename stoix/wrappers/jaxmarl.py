"""Adapter from cooperative JaxMARL environments (SMAX, Overcooked) to the Stoix suite interface.

Agents are stacked on a leading agent axis so one shared network can act for all of them:
`agent_view` is [num_agents, obs_dim + num_agents] (each agent's flattened observation followed
by a one-hot of its index, which is all that tells agents apart under shared parameters),
`action_mask` is [num_agents, A] and actions are [num_agents] int32. The reward is one team
reward: both SMAX (every ally gets its team's reward) and Overcooked (every agent gets the
delivery reward) give all agents the same value, so the mean over agents is that value.

JaxMARL's `step` auto-resets and loses the true final observation; the adapter calls
`step_env` and leaves auto-reset to `EpisodeEnv`. Its `dones["__all__"]` folds the time
limit into the end of the episode, so the adapter separates the two per family:

* SMAX: terminated when one side is wiped out; otherwise an episode end is the time limit.
  SMAX checks the limit against the step count before incrementing it, so its episodes last
  `max_steps + 1` steps.
* Overcooked: there is no terminal state; every episode end is the `max_steps` time limit.
"""

from typing import Any, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import jaxmarl

from stoix.base_types import Action, EnvSpec, Observation, PRNGKey
from stoix.wrappers.episode import AdapterStep

SMAX_SCENARIOS = ("HeuristicEnemySMAX",)
OVERCOOKED_SCENARIOS = ("overcooked",)


class JaxMARLState(NamedTuple):
    env_state: Any
    step_count: jax.Array  # () int32, steps taken in the current episode


class JaxMARLAdapter:
    """One cooperative JaxMARL env with its agents stacked on a leading axis.

    Args:
        scenario: the JaxMARL env id: "HeuristicEnemySMAX" or "overcooked".
        map_name: SMAX map, e.g. "3m" (SMAX only).
        layout: Overcooked layout name, e.g. "cramped_room" (Overcooked only).
        shaped_reward_coef: Overcooked only: adds this times the mean of the agents' shaped
            rewards (onion in pot, dish pick-up, soup pick-up) to the team reward. It is then
            part of the logged episode return too, so report returns with it at 0.
        **env_kwargs: passed to `jaxmarl.make` (e.g. SMAX `max_steps`, `won_battle_bonus`).
    """

    def __init__(
        self,
        scenario: str,
        map_name: str | None = None,
        layout: str | None = None,
        shaped_reward_coef: float = 0.0,
        **env_kwargs: Any,
    ):
        if scenario in SMAX_SCENARIOS:
            from jaxmarl.environments.smax import map_name_to_scenario

            if map_name is None or layout is not None or shaped_reward_coef:
                raise ValueError(f"{scenario} takes kwargs.map_name (e.g. 3m) and no layout")
            self._env = jaxmarl.make(
                scenario, scenario=map_name_to_scenario(map_name), **env_kwargs
            )
            self._smax = True
            episode_steps = int(self._env.max_steps) + 1
        elif scenario in OVERCOOKED_SCENARIOS:
            from jaxmarl.environments.overcooked import overcooked_layouts

            if layout not in overcooked_layouts or map_name is not None:
                raise ValueError(
                    f"overcooked takes kwargs.layout, one of {sorted(overcooked_layouts)}"
                )
            self._env = jaxmarl.make(scenario, layout=overcooked_layouts[layout], **env_kwargs)
            self._smax = False
            episode_steps = int(self._env.max_steps)
        else:
            raise ValueError(
                f"the jaxmarl suite supports {[*SMAX_SCENARIOS, *OVERCOOKED_SCENARIOS]}, "
                f"not '{scenario}'"
            )
        self._agents = list(self._env.agents)
        self._shaped_reward_coef = float(shaped_reward_coef)
        num_agents = len(self._agents)
        obs_dim = 1
        for size in self._env.observation_space(self._agents[0]).shape:
            obs_dim *= int(size)
        self._num_actions = int(self._env.action_space(self._agents[0]).n)
        self._agent_ids = jnp.eye(num_agents, dtype=jnp.float32)
        self.num_agents = num_agents
        self.spec = EnvSpec(
            observation_shape=(num_agents, obs_dim + num_agents),
            action_kind="discrete",
            num_actions=self._num_actions,
            max_episode_steps=episode_steps,
        )

    def _observation(self, obs: Dict[str, jax.Array], state: JaxMARLState) -> Observation:
        per_agent = jnp.stack(
            [obs[agent].reshape(-1).astype(jnp.float32) for agent in self._agents]
        )
        if self._smax:
            avail = self._env.get_avail_actions(state.env_state)
            mask = jnp.stack([avail[agent] for agent in self._agents]).astype(bool)
        else:
            mask = jnp.ones((self.num_agents, self._num_actions), bool)
        return Observation(
            agent_view=jnp.concatenate([per_agent, self._agent_ids], axis=-1),
            action_mask=mask,
            step_count=state.step_count,
        )

    def reset(self, key: PRNGKey) -> Tuple[JaxMARLState, Observation]:
        obs, env_state = self._env.reset(key)
        state = JaxMARLState(env_state, jnp.zeros((), jnp.int32))
        return state, self._observation(obs, state)

    def step(
        self, state: JaxMARLState, action: Action, key: PRNGKey
    ) -> Tuple[JaxMARLState, AdapterStep]:
        actions = {agent: action[i] for i, agent in enumerate(self._agents)}
        obs, env_state, rewards, dones, infos = self._env.step_env(key, state.env_state, actions)
        reward = jnp.mean(jnp.stack([rewards[agent] for agent in self._agents]))
        if self._smax:
            alive = env_state.state.unit_alive
            allies = self._env.num_allies
            terminated = jnp.logical_or(
                jnp.all(jnp.logical_not(alive[:allies])),
                jnp.all(jnp.logical_not(alive[allies:])),
            )
        else:
            terminated = jnp.zeros((), bool)
            if self._shaped_reward_coef:
                shaped = jnp.stack([infos["shaped_reward"][agent] for agent in self._agents])
                reward = reward + self._shaped_reward_coef * jnp.mean(shaped)
        done = jnp.asarray(dones["__all__"], bool)
        new_state = JaxMARLState(env_state, state.step_count + 1)
        return new_state, AdapterStep(
            observation=self._observation(obs, new_state),
            reward=jnp.asarray(reward, jnp.float32),
            terminated=jnp.logical_and(done, terminated),
            truncated=jnp.logical_and(done, jnp.logical_not(terminated)),
        )
