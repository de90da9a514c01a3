"""envpool Atari inside the compiled Anakin loop, stepped through envpool's XLA (FFI) call.

envpool steps a whole pool of envs in one stateful call, while Stoix systems write
`jax.vmap(env.step)` over a per-env function. `EnvpoolEnv.reset` / `step` are per-env functions
whose batching rule (`jax.custom_batching.custom_vmap`) turns the vmap over a replica's N envs
into one call on a pool of N envs. Systems, the runner and the evaluator stay unchanged.

Pools. envpool's FFI call names its pool in the compiled program (not in the handle data), so
each `EnvpoolEnv` keeps one pool per device and per env count, made in Python when the vmap is
first traced; the env state records its pool's index (the device index under the runner's
shard_map) and `step` dispatches on it with `lax.switch`, so every device steps its own pool.
Train and eval envs are separate `EnvpoolEnv` objects and so never share a pool. Reset is a host
callback (`pool.reset()`): envpool's XLA interface has no reset, and evaluations reset each time.
A replica must be the only user of its device's pool: any further vmap around the env (several
seeds, an update batch, a sweep) is refused with a `ConfigError`.

Episodes. envpool auto-resets on the step AFTER an episode ends (its "next-step" mode) and
ignores that step's action. Stoix's same-step contract (the reset observation in `observation`,
the final one in `next_observation`) cannot be met without stepping the other envs too, so:
the step that ends a life or game reports TERMINATED / TRUNCATED with the true final observation
in both fields, and envpool's reset step that follows is reported as a MID step with reward 0 and
discount 0. That reset step's transition starts from the final observation, whose value no target
bootstraps from after a termination, so its zero target does no harm there; after a truncation
(the 108k-frame limit) it pulls that one state's value towards 0.

Metrics. `episode_return` is the unclipped score of the whole game (envpool's `info["reward"]`)
and `is_terminal_step` marks the end of the game (game over or time limit), not of a life, even
with `episodic_life`; `step_type` still terminates on every lost life in that case.
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.experimental import io_callback

from stoix.base_types import (
    Action,
    EnvSpec,
    EpisodeMetrics,
    Observation,
    PRNGKey,
    StepType,
    TimeStep,
)
from stoix.errors import ConfigError

# Each pool's envs are seeded from seed + env index; pools sit this far apart.
_POOL_SEED_STRIDE = 100_003

ATARI_DEFAULTS: Dict[str, Any] = {
    "episodic_life": True,
    "reward_clip": True,
    "repeat_action_probability": 0.0,
    "frame_skip": 4,
    "noop_max": 30,
    "img_height": 84,
    "img_width": 84,
    "stack_num": 4,
}


class EnvpoolState(NamedTuple):
    """One env's state; `jax.vmap(env.reset)` gives every leaf a leading [N] axis."""

    pool: jax.Array  # () int32, index of the pool (one per device) that holds this env
    handle: jax.Array  # (8,) uint8, envpool's handle, threaded through calls to order them
    resetting: jax.Array  # () bool, the last step ended a life or game: envpool resets now
    game_return: jax.Array  # () float32, unclipped score of the current game so far
    game_length: jax.Array  # () int32, agent steps of the current game so far


class PoolStep(NamedTuple):
    """One envpool step of a whole pool, envs in env-id order."""

    handle: jax.Array  # (8,) uint8
    frames: jax.Array  # [N, C, H, W] uint8
    reward: jax.Array  # [N] float32, clipped when reward_clip
    terminated: jax.Array  # [N] bool, game over, or a lost life when episodic_life
    truncated: jax.Array  # [N] bool, envpool's max_episode_steps
    raw_reward: jax.Array  # [N] float32, the unclipped game score change
    game_over: jax.Array  # [N] bool


def _refuse_outer_vmap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Lets `fn` (a whole-pool operation) be vmapped only over a size-one axis.

    The runner vmaps its per-replica functions over seeds and update batches (size one in a
    plain run); a larger axis would make several replicas share one device's pool.
    """
    wrapped = custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size: int, in_batched: Any, *args: Any) -> Tuple[Any, Any]:
        if axis_size != 1:
            raise ConfigError(
                "env.suite=envpool steps one pool per device, so it runs one replica per "
                "device: set arch.num_seeds=1, arch.update_batch_size=1 and no arch.sweep"
            )
        flat_batched = jax.tree.leaves(in_batched)
        flat_args, tree = jax.tree.flatten(args)
        squeezed = [x[0] if b else x for x, b in zip(flat_args, flat_batched, strict=True)]
        out = wrapped(*jax.tree.unflatten(tree, squeezed))
        return jax.tree.map(lambda x: x[None], out), jax.tree.map(lambda _: True, out)

    return wrapped


def _device_index_and_count() -> Tuple[jax.Array, int]:
    """This replica's device index and the device count under the runner's shard_map."""
    from stoix.parallel import DEVICE_AXIS

    try:
        return jax.lax.axis_index(DEVICE_AXIS), int(jax.lax.axis_size(DEVICE_AXIS))
    except NameError:  # outside the runner (unit tests, single-device use): one pool
        return jnp.zeros((), jnp.int32), 1


class EnvpoolEnv:
    """An envpool task as a Stoix environment whose `jax.vmap`-ed calls step whole pools.

    Args:
        task_id: envpool's id, e.g. "Pong-v5".
        max_episode_steps: envpool's episode cap in agent steps (truncation).
        seed: base seed of the pools.
        **make_kwargs: passed to `envpool.make` (episodic_life, reward_clip, frame_skip, ...).
    """

    def __init__(
        self, task_id: str, max_episode_steps: int | None = None, seed: int = 0, **make_kwargs: Any
    ):
        import envpool

        if task_id not in envpool.list_all_envs():
            raise ValueError(f"envpool has no task '{task_id}'")
        self._envpool = envpool
        self._task_id = task_id
        self._seed = int(seed)
        self._make_kwargs = {**ATARI_DEFAULTS, **make_kwargs}
        if max_episode_steps is not None:
            self._make_kwargs["max_episode_steps"] = int(max_episode_steps)
        # A one-env pool tells us the spaces and envpool's own episode cap.
        probe = self._make(num_envs=1, seed=self._seed)
        channels, height, width = probe.observation_space.shape
        self._frame_shape = (channels, height, width)
        self._num_actions = int(probe.action_space.n)
        cap = int(probe.spec.config.max_episode_steps)
        probe.close()
        self.spec = EnvSpec(
            observation_shape=(height, width, channels),
            action_kind="discrete",
            num_actions=self._num_actions,
            max_episode_steps=cap,
        )
        self.max_episode_steps = cap
        self._pools: Dict[Tuple[int, int], Any] = {}  # (num_envs, device) -> pool
        self._handles: Dict[Tuple[int, int], np.ndarray] = {}
        self._steppers: Dict[Tuple[int, int], Callable[..., Any]] = {}
        self._pools_made = 0
        self._pool_ops: Dict[int, Tuple[Callable[..., Any], Callable[..., Any]]] = {}
        self.reset = custom_vmap(self._reset_one)
        self.reset.def_vmap(self._reset_rule)
        self.step = custom_vmap(self._step_one)
        self.step.def_vmap(self._step_rule)

    def _make(self, num_envs: int, seed: int) -> Any:
        return self._envpool.make(
            self._task_id,
            env_type="gymnasium",
            num_envs=num_envs,
            batch_size=num_envs,
            seed=seed,
            **self._make_kwargs,
        )

    def _ensure_pools(self, num_envs: int, num_devices: int) -> None:
        for device in range(num_devices):
            if (num_envs, device) not in self._pools:
                pool = self._make(num_envs, self._seed + _POOL_SEED_STRIDE * self._pools_made)
                self._pools_made += 1
                handle, _, _, step = pool.xla()
                self._pools[(num_envs, device)] = pool
                self._handles[(num_envs, device)] = np.array(handle, np.uint8)
                self._steppers[(num_envs, device)] = step

    # Whole-pool operations (no vmap around them; see `_refuse_outer_vmap`).

    def _pool_ops_for(self, num_envs: int) -> Tuple[Callable[..., Any], Callable[..., Any]]:
        """(reset, step) of the pools of `num_envs` envs, made once per env count."""
        if num_envs not in self._pool_ops:
            self._pool_ops[num_envs] = (
                _refuse_outer_vmap(functools.partial(self._pool_reset_unbatched, num_envs)),
                _refuse_outer_vmap(functools.partial(self._pool_step_unbatched, num_envs)),
            )
        return self._pool_ops[num_envs]

    def _pool_reset_unbatched(
        self, num_envs: int, index: jax.Array, key: PRNGKey
    ) -> Tuple[jax.Array, jax.Array]:
        # `key` is unused by envpool; taking it makes a vmap over replicas visible here.
        del key

        def host_reset(device: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            pool = self._pools[(num_envs, int(device))]
            frames, info = pool.reset()
            handle = self._handles[(num_envs, int(device))]
            return frames[np.argsort(info["env_id"])], handle

        shapes = (
            jax.ShapeDtypeStruct((num_envs,) + self._frame_shape, jnp.uint8),
            jax.ShapeDtypeStruct((8,), jnp.uint8),
        )
        return io_callback(host_reset, shapes, index, ordered=False)

    def _pool_step_unbatched(
        self, num_envs: int, index: jax.Array, handle: jax.Array, action: jax.Array
    ) -> PoolStep:
        devices = sorted(d for n, d in self._steppers if n == num_envs)

        def branch(device: int) -> Callable[[jax.Array, jax.Array], PoolStep]:
            step = self._steppers[(num_envs, device)]

            def call(handle: jax.Array, action: jax.Array) -> PoolStep:
                handle, (frames, reward, terminated, truncated, info) = step(handle, action)
                # Results come back in completion order; put them in env-id order.
                order = jnp.argsort(info["env_id"])
                return PoolStep(
                    handle=handle,
                    frames=frames[order],
                    reward=reward[order].astype(jnp.float32),
                    terminated=terminated[order].astype(bool),
                    truncated=truncated[order].astype(bool),
                    raw_reward=info["reward"][order].astype(jnp.float32),
                    game_over=info["terminated"][order].astype(bool),
                )

            return call

        return jax.lax.switch(index, [branch(d) for d in devices], handle, action)

    # Per-env functions: only their vmap (one per replica, over its N envs) is meaningful.

    def _observation(self, frames: jax.Array, game_length: jax.Array) -> Observation:
        # envpool gives stacked frames as [..., C, H, W] uint8; the CNN torsos read (H, W, C),
        # and floats in [0, 1] suit every torso (with or without normalisation layers).
        view = jnp.moveaxis(frames, -3, -1).astype(jnp.float32) / 255.0
        mask = jnp.ones(game_length.shape + (self._num_actions,), bool)
        return Observation(agent_view=view, action_mask=mask, step_count=game_length)

    def _reset_one(self, key: PRNGKey) -> Tuple[EnvpoolState, TimeStep]:
        # Unbatched, there is no pool: this gives a blank example (networks are initialised from
        # it); real episodes start from `jax.vmap(env.reset)`.
        del key
        frames = jnp.zeros(self._frame_shape, jnp.uint8)
        state = EnvpoolState(
            pool=jnp.zeros((), jnp.int32),
            handle=jnp.zeros((8,), jnp.uint8),
            resetting=jnp.zeros((), bool),
            game_return=jnp.zeros((), jnp.float32),
            game_length=jnp.zeros((), jnp.int32),
        )
        return state, self._first_timestep(frames, state.game_length)

    def _first_timestep(self, frames: jax.Array, game_length: jax.Array) -> TimeStep:
        observation = self._observation(frames, game_length)
        zeros = jnp.zeros(game_length.shape, jnp.float32)
        return TimeStep(
            step_type=jnp.full(game_length.shape, StepType.FIRST, jnp.int8),
            reward=zeros,
            discount=jnp.ones(game_length.shape, jnp.float32),
            observation=observation,
            next_observation=observation,
            metrics=EpisodeMetrics(
                episode_return=zeros,
                episode_length=jnp.zeros(game_length.shape, jnp.int32),
                is_terminal_step=jnp.zeros(game_length.shape, bool),
            ),
        )

    def _reset_rule(
        self, num_envs: int, in_batched: Any, key: PRNGKey
    ) -> Tuple[Tuple[EnvpoolState, TimeStep], Any]:
        del in_batched  # envpool seeds its envs itself (see `_ensure_pools`)
        device, num_devices = _device_index_and_count()
        self._ensure_pools(num_envs, num_devices)
        pool_reset, _ = self._pool_ops_for(num_envs)
        frames, handle = pool_reset(device.astype(jnp.int32), key[0])
        zeros_i = jnp.zeros((num_envs,), jnp.int32)
        state = EnvpoolState(
            pool=jnp.broadcast_to(device.astype(jnp.int32), (num_envs,)),
            handle=jnp.broadcast_to(handle, (num_envs, 8)),
            resetting=jnp.zeros((num_envs,), bool),
            game_return=jnp.zeros((num_envs,), jnp.float32),
            game_length=zeros_i,
        )
        out = (state, self._first_timestep(frames, zeros_i))
        return out, jax.tree.map(lambda _: True, out)

    def _step_one(self, state: EnvpoolState, action: Action) -> Tuple[EnvpoolState, TimeStep]:
        # custom_vmap traces this for the output types even when vmapped; only an unbatched call
        # runs it, and that fails at run time: one env cannot be stepped apart from its pool.
        def refuse() -> np.ndarray:
            raise ValueError(
                "an envpool env steps as a whole pool: call jax.vmap(env.step) over all its envs"
            )

        guard = io_callback(refuse, jax.ShapeDtypeStruct((), jnp.float32), ordered=False)
        del action
        _, timestep = self._reset_one(state.pool)
        return state, timestep._replace(reward=timestep.reward + guard)

    def _step_rule(
        self, num_envs: int, in_batched: Any, state: EnvpoolState, action: Action
    ) -> Tuple[Tuple[EnvpoolState, TimeStep], Any]:
        state_batched, action_batched = in_batched
        if not all(jax.tree.leaves(state_batched)):
            raise ValueError("jax.vmap(env.step) needs the state made by jax.vmap(env.reset)")
        if not action_batched:
            action = jnp.broadcast_to(action, (num_envs,))
        _, num_devices = _device_index_and_count()
        self._ensure_pools(num_envs, num_devices)
        _, pool_step = self._pool_ops_for(num_envs)
        out = pool_step(state.pool[0], state.handle[0], action.astype(jnp.int32))

        # envpool's reset step (the one after a life or game ended) ignored the action: it is
        # no step of the game. The score restarts only when the game itself ended.
        reset_step = state.resetting
        reward = jnp.where(reset_step, 0.0, out.reward)
        raw_reward = jnp.where(reset_step, 0.0, out.raw_reward)
        terminated = jnp.logical_and(out.terminated, jnp.logical_not(reset_step))
        truncated = jnp.logical_and(
            out.truncated, jnp.logical_not(jnp.logical_or(terminated, reset_step))
        )
        ended = jnp.logical_or(terminated, truncated)
        game_end = jnp.logical_or(
            jnp.logical_and(out.game_over, jnp.logical_not(reset_step)), truncated
        )
        game_return = state.game_return + raw_reward
        game_length = state.game_length + jnp.where(reset_step, 0, 1)
        step_type = jnp.where(
            terminated,
            StepType.TERMINATED,
            jnp.where(truncated, StepType.TRUNCATED, StepType.MID),
        ).astype(jnp.int8)
        new_state = EnvpoolState(
            pool=state.pool,
            handle=jnp.broadcast_to(out.handle, (num_envs, 8)),
            resetting=ended,
            game_return=jnp.where(game_end, 0.0, game_return),
            game_length=jnp.where(game_end, 0, game_length),
        )
        observation = self._observation(out.frames, new_state.game_length)
        timestep = TimeStep(
            step_type=step_type,
            reward=reward,
            # The reset step is absorbing (see the module docstring): its target is 0.
            discount=1.0 - jnp.logical_or(terminated, reset_step).astype(jnp.float32),
            observation=observation,
            next_observation=observation,
            metrics=EpisodeMetrics(
                episode_return=game_return,
                episode_length=game_length,
                is_terminal_step=game_end,
            ),
        )
        out_tree = (new_state, timestep)
        return out_tree, jax.tree.map(lambda _: True, out_tree)
