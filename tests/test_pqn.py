"""PQN's swept hyperparameters reach the update: each run's learning rate and λ are its own."""

import jax
import numpy as np

from stoix.system_api import BuildContext
from stoix.systems.q_learning.anakin import ff_pqn
from stoix.utils.config import make_run_plan
from stoix.utils.entry import compose_config
from stoix.wrappers.env_factory import make_env
from tests.helpers import TINY


def one_update(tuned, extra=()):
    cfg = compose_config(
        "ff_pqn",
        [
            *TINY,
            "arch.total_timesteps=4096",
            "system.rollout_length=16",
            "system.num_minibatches=2",
            *extra,
        ],
    )
    env = make_env(cfg.env)
    parts = ff_pqn.build(BuildContext(cfg, env, make_run_plan(cfg, 1)))
    shared = parts.init_shared(jax.random.PRNGKey(0), tuned)
    state = parts.init_state(shared, jax.random.PRNGKey(1))
    # The runner's replica axes, each of size one, so the gradient pmean has its names.
    update = jax.vmap(jax.vmap(parts.update_step, axis_name="batch"), axis_name="device")
    new_state, metrics = jax.jit(update)(jax.tree.map(lambda x: x[None, None], state))
    return (
        state,
        jax.tree.map(lambda x: x[0, 0], new_state),
        jax.tree.map(lambda x: x[0, 0], metrics),
    )


def max_param_change(before, after, collection="params"):
    changes = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))),
        before.params[collection],
        after.params[collection],
    )
    return max(jax.tree.leaves(changes))


def test_swept_learning_rate_is_the_one_used():
    before, after, _ = one_update({"system.q_lr": np.float32(0.0)})
    assert max_param_change(before, after) == 0.0
    before, after, _ = one_update({"system.q_lr": np.float32(3e-3)})
    assert max_param_change(before, after) > 1e-4


def test_swept_lambda_is_the_one_used():
    state, _, one_step = one_update({"system.q_lambda": np.float32(0.0)})
    assert float(state.q_lambda) == 0.0
    _, _, long_trace = one_update({"system.q_lambda": np.float32(0.95)})
    assert float(one_step.loss_info.target_mean) != float(long_trace.loss_info.target_mean)
    state, _, default = one_update({})
    assert float(state.q_lambda) == np.float32(0.95)
    assert float(default.loss_info.target_mean) == float(long_trace.loss_info.target_mean)


def test_batch_norm_statistics_are_learned_and_only_params_are_optimised():
    before, after, metrics = one_update({}, ["network=mlp_pqn_batch_norm"])
    assert set(before.params) == {"params", "batch_stats"}
    assert max_param_change(before, after, "batch_stats") > 0.0
    assert max_param_change(before, after, "params") > 0.0
    assert np.isfinite(float(metrics.loss_info.loss))
