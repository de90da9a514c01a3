"""Compiled evaluation on separate environments, with a hard step cap so it always ends."""

from typing import Any, Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from stoix.base_types import Action, Environment, Observation, Params, PRNGKey

# (actor params, batched observation, key) -> batched actions
EvalActFn = Callable[[Params, Observation, PRNGKey], Action]


class RecurrentEvalAct(NamedTuple):
    """An actor with memory: it carries a hidden state from step to step.

    initial_hidden: number of envs -> the hidden state episodes start from.
    act: (params, hidden, batched observation, reset [E], key) -> (hidden, actions), where
        `reset` marks the envs whose observation opens a new episode.
    """

    initial_hidden: Callable[[int], Any]
    act: Callable[[Params, Any, Observation, jax.Array, PRNGKey], Tuple[Any, Action]]


def _as_recurrent(act: EvalActFn) -> RecurrentEvalAct:
    """A memoryless actor seen as a recurrent one with an empty hidden state."""
    return RecurrentEvalAct(
        initial_hidden=lambda num_envs: (),
        act=lambda params, hidden, observation, reset, key: (hidden, act(params, observation, key)),
    )


class EvalOutput(NamedTuple):
    """Statistics of the first episode of every evaluation env."""

    episode_return: jax.Array  # [E]
    episode_length: jax.Array  # [E]


class _EvalCarry(NamedTuple):
    env_state: object
    observation: Observation
    actor_hidden: Any
    new_episode: jax.Array  # [E] bool: the observation opens an episode
    key: PRNGKey
    episode_return: jax.Array  # [E] recorded return of the finished first episode
    episode_length: jax.Array  # [E]
    running_return: jax.Array  # [E] return of the episode still in progress
    running_length: jax.Array  # [E]
    finished: jax.Array  # [E] bool
    steps: jax.Array  # ()


def make_evaluator(
    env: Environment,
    act: EvalActFn | RecurrentEvalAct,
    num_episodes: int,
    max_steps: int,
) -> Callable[[Params, PRNGKey], EvalOutput]:
    """Builds `evaluate(params, key)`: runs `num_episodes` envs in parallel to their first end.

    `max_steps` is a hard cap on the loop: an env still running then (possible only when the cap
    is below the env's own episode limit) reports its return so far.
    """
    actor = act if isinstance(act, RecurrentEvalAct) else _as_recurrent(act)
    # Each env is used up to its first episode end, so auto-resets would be wasted work.
    step_env = getattr(env, "step_to_end", env.step)

    def evaluate(params: Params, key: PRNGKey) -> EvalOutput:
        key, reset_key = jax.random.split(key)
        env_state, timestep = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
        zeros = jnp.zeros((num_episodes,), jnp.float32)
        zero_len = jnp.zeros((num_episodes,), jnp.int32)
        carry = _EvalCarry(
            env_state,
            timestep.observation,
            actor.initial_hidden(num_episodes),
            jnp.ones((num_episodes,), bool),
            key,
            zeros,
            zero_len,
            zeros,
            zero_len,
            jnp.zeros((num_episodes,), bool),
            jnp.zeros((), jnp.int32),
        )

        def not_done(c: _EvalCarry) -> jax.Array:
            return jnp.logical_and(jnp.logical_not(jnp.all(c.finished)), c.steps < max_steps)

        def step(c: _EvalCarry) -> _EvalCarry:
            key, act_key = jax.random.split(c.key)
            hidden, action = actor.act(
                params, c.actor_hidden, c.observation, c.new_episode, act_key
            )
            env_state, ts = jax.vmap(step_env)(c.env_state, action)
            ended_now = jnp.logical_and(ts.metrics.is_terminal_step, jnp.logical_not(c.finished))
            return _EvalCarry(
                env_state=env_state,
                observation=ts.observation,
                actor_hidden=hidden,
                new_episode=ts.metrics.is_terminal_step,
                key=key,
                episode_return=jnp.where(ended_now, ts.metrics.episode_return, c.episode_return),
                episode_length=jnp.where(ended_now, ts.metrics.episode_length, c.episode_length),
                running_return=jnp.where(c.finished, c.running_return, ts.metrics.episode_return),
                running_length=jnp.where(c.finished, c.running_length, ts.metrics.episode_length),
                finished=jnp.logical_or(c.finished, ts.metrics.is_terminal_step),
                steps=c.steps + 1,
            )

        final = jax.lax.while_loop(not_done, step, carry)
        return EvalOutput(
            episode_return=jnp.where(final.finished, final.episode_return, final.running_return),
            episode_length=jnp.where(final.finished, final.episode_length, final.running_length),
        )

    return evaluate
