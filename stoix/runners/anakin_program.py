"""The compiled programs of an Anakin run, built around one system's parts.

Parallel axes, outermost first: devices (`shard_map` over the mesh axis `DEVICE_AXIS`), seeds
(`vmap` named `SEED_AXIS`), update batch (`vmap` named `BATCH_AXIS`), and the envs inside the
system's rollout. Learner-state leaves are laid out [devices, seeds, update_batch, ...]. One
call of `learn` is one evaluation period: `updates_per_evaluation` updates in one program.
"""

from typing import Any, Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stoix.base_types import Environment, LearnerState, Params, PRNGKey, TrainMetrics
from stoix.evaluator.anakin import EvalOutput, make_evaluator
from stoix.parallel import BATCH_AXIS, DEVICE_AXIS, SEED_AXIS, map_leading_axis
from stoix.system_api import SystemParts
from stoix.utils.config import RunPlan


class AnakinProgram(NamedTuple):
    """The run's functions, jitted and sharded over the devices (compiled by the runner).

    init: (shared [D, S, ...], replica keys [D, S, B, 2]) -> learner state.
    learn: (state, training mask [D, S]) -> (state, metrics, finite [D, S]); the state is donated.
    extract_actor: state -> the evaluator's params of each seed's first update-batch slot.
    evaluate: (actor params, key) -> episodes [D, S, E/D].
    keep_best: (best, current, improved [D, S]) -> best-so-far params per seed.
    replica_axes: the axes `pmean_replicas` averages over while `learn` is traced.
    """

    sharded: NamedSharding
    init: Callable[..., Any]
    learn: Callable[..., Any]
    extract_actor: Callable[..., Any]
    evaluate: Callable[..., Any]
    keep_best: Callable[..., Any]
    replica_axes: Tuple[str, ...]


def _finite_per_run(metrics: TrainMetrics) -> jax.Array:
    """[S] whether every loss value of each run in one device's [S, B, U, ...] metrics is
    finite, agreed over the devices (each holds a share of every run's replicas)."""
    leaves = jax.tree.leaves(metrics.loss_info)
    finite = jnp.ones(metrics.num_episodes.shape[:1], bool)
    for leaf in leaves:
        finite &= jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
    return jax.lax.pmin(finite.astype(jnp.int32), DEVICE_AXIS) > 0


def _keep_healthy(new: Any, old: Any, keep: jax.Array) -> Any:
    """Each run's new state where `keep` [S], its state from before the period elsewhere."""
    return jax.tree.map(
        lambda n, o: jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - 1)), n, o), new, old
    )


def build_program(
    parts: SystemParts,
    plan: RunPlan,
    devices: Any,
    eval_env: Environment,
    greedy: bool,
    max_eval_steps: int,
) -> AnakinProgram:
    mesh = Mesh(np.array(devices), (DEVICE_AXIS,))
    sharded = NamedSharding(mesh, P(DEVICE_AXIS))

    def on_each_device(
        fn: Callable[..., Any], num_args: int = 1, donate: bool = False
    ) -> Callable[..., Any]:
        """jit + shard_map of a function of per-device slices (leading axis kept, size 1).

        Every multi-device program goes through shard_map: left to the SPMD partitioner, even a
        slice of sharded state gets collectives, which can deadlock on multi-device CPU.
        check_vma is off because env constants (e.g. an all-True action mask) are
        device-invariant values inside device-varying carries, which the checker rejects.
        """
        return jax.jit(
            jax.shard_map(
                fn,
                mesh=mesh,
                in_specs=(P(DEVICE_AXIS),) * num_args,
                out_specs=P(DEVICE_AXIS),
                check_vma=False,
            ),
            donate_argnums=(0,) if donate else (),
        )

    def per_replica_period(state: LearnerState) -> Tuple[LearnerState, TrainMetrics]:
        return jax.lax.scan(
            lambda s, _: parts.update_step(s), state, None, length=plan.updates_per_evaluation
        )

    per_device = map_leading_axis(
        map_leading_axis(per_replica_period, plan.update_batch_size, BATCH_AXIS),
        plan.num_runs,
        SEED_AXIS,
    )
    replica_axes = (BATCH_AXIS, DEVICE_AXIS) if plan.update_batch_size > 1 else (DEVICE_AXIS,)

    def learn_body(
        state: LearnerState, training: jax.Array
    ) -> Tuple[LearnerState, TrainMetrics, jax.Array]:
        local = jax.tree.map(lambda x: x[0], state)
        new, metrics = per_device(local)
        finite = _finite_per_run(metrics)
        if plan.num_runs > 1:
            # One diverging run must not end the others: it keeps the state it had before this
            # period (frozen from now on) while the others train on.
            new = _keep_healthy(new, local, finite & training[0])
        return jax.tree.map(lambda x: x[None], (new, metrics, finite))

    def init_body(shared: Any, replica_keys: jax.Array) -> LearnerState:
        # shared: [1, S, ...] → every update-batch slot of a seed starts from the same copy.
        per_seed = jax.vmap(parts.init_state, in_axes=(None, 0))
        local = jax.vmap(per_seed)(jax.tree.map(lambda x: x[0], shared), replica_keys[0])
        return jax.tree.map(lambda x: x[None], local)

    evaluate_episodes = make_evaluator(
        eval_env, parts.eval_act(greedy), plan.eval_episodes_per_device, max_eval_steps
    )

    def evaluate_body(params: Params, key: PRNGKey) -> EvalOutput:
        device_key = jax.random.fold_in(key, jax.lax.axis_index(DEVICE_AXIS))
        local = jax.tree.map(lambda x: x[0], params)
        keys = jax.random.split(device_key, plan.num_runs)
        return jax.tree.map(lambda x: x[None], jax.vmap(evaluate_episodes)(local, keys))

    evaluate = jax.jit(
        jax.shard_map(
            evaluate_body,
            mesh=mesh,
            in_specs=(P(DEVICE_AXIS), P()),
            out_specs=P(DEVICE_AXIS),
            check_vma=False,
        )
    )

    def select_improved(best: Params, current: Params, improved: jax.Array) -> Params:
        return jax.tree.map(
            lambda b, c: jnp.where(improved.reshape(improved.shape + (1,) * (b.ndim - 2)), c, b),
            best,
            current,
        )

    return AnakinProgram(
        sharded=sharded,
        init=on_each_device(init_body, num_args=2),
        learn=on_each_device(learn_body, num_args=2, donate=True),
        # Evaluate with the first update-batch slot's params: all slots of a seed hold the same.
        extract_actor=on_each_device(
            lambda state: jax.tree.map(lambda x: jnp.copy(x[:, :, 0]), parts.actor_params(state))
        ),
        evaluate=evaluate,
        keep_best=on_each_device(select_improved, num_args=3),
        replica_axes=replica_axes,
    )
