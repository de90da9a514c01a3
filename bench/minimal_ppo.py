"""A minimal, hand-fused PPO for gymnax CartPole-v1: the training "speed of light" for ff_ppo.

Written from scratch in the PureJaxRL style, with no Stoix code: ONE jitted function that
initialises, then `lax.scan`s over updates, each a rollout scan, GAE and epochs × minibatches.
The benchmark compares Stoix's ff_ppo to it, so it does the same work per update as ff_ppo at
the same settings (configs/system/ppo/ff_ppo.yaml, configs/network/mlp.yaml):

* separate actor and critic MLPs, 64-64 tanh, orthogonal init (√2 torso, 0.01 policy head,
  1.0 value head), categorical policy, scalar critic;
* clipped surrogate + clipped value loss (value coefficient 0.5) + entropy bonus 0.01,
  advantages standardised per minibatch;
* Adam (eps 1e-5) after a global-norm clip of 0.5, each network its own optimiser, learning
  rate decaying linearly to 0 over all gradient steps;
* GAE(γ=0.99, λ=0.95), `epochs` × `num_minibatches` shuffled minibatches.

What it does the PureJaxRL way, because that is what "hand-fused" buys: gymnax's own
auto-reset (`env.step`), critic values computed inside the rollout (one pass per step and one
for the last observation), and truncation treated like termination (no bootstrap through the
500-step limit, the shortcut Stoix deliberately does not take).

    python bench/minimal_ppo.py --envs 128 --steps 1000000
"""

import argparse
import json
import time
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

# ff_ppo's defaults; kept as constants so this file stays one page of plain JAX.
GAMMA = 0.99
GAE_LAMBDA = 0.95
CLIP_EPS = 0.2
VALUE_CLIP_EPS = 0.2
ENT_COEF = 0.01
VF_COEF = 0.5
LR = 3e-4
MAX_GRAD_NORM = 0.5
EPOCHS = 4
HIDDEN = (64, 64)


# NETWORKS: plain weight lists, so nothing but matmuls and tanh ends up in the program.


def orthonormal(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Orthogonal init with the QR in numpy: jaxlib 0.10.2's CPU QR kernels deadlock when the
    actor's and critic's run at once on a 2-core machine (see docs/design-notes.md)."""
    tall = (max(shape), min(shape))

    def q_of(gaussian: np.ndarray) -> np.ndarray:
        q, r = np.linalg.qr(gaussian)
        return (q * np.sign(np.diag(r))).astype(np.float32)

    q = jax.pure_callback(
        q_of, jax.ShapeDtypeStruct(tall, jnp.float32), jax.random.normal(key, tall)
    )
    return q if shape[0] >= shape[1] else q.T


def init_mlp(key: jax.Array, in_dim: int, out_dim: int, out_scale: float) -> list:
    dims = (in_dim, *HIDDEN, out_dim)
    keys = jax.random.split(key, len(dims) - 1)
    layers = []
    for i, k in enumerate(keys):
        scale = out_scale if i == len(keys) - 1 else np.sqrt(2.0)
        w = scale * orthonormal(k, (dims[i], dims[i + 1]))
        layers.append((w, jnp.zeros((dims[i + 1],), jnp.float32)))
    return layers


def mlp(layers: list, x: jax.Array) -> jax.Array:
    for w, b in layers[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = layers[-1]
    return x @ w + b


def value_fn(params: dict, obs: jax.Array) -> jax.Array:
    return mlp(params["critic"], obs)[..., 0]


class Transition(NamedTuple):
    obs: jax.Array  # [T, N, 4]
    action: jax.Array  # [T, N]
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    finished_return: jax.Array  # return of the episode that ended here, else 0


class Minibatch(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


def make_train(num_envs: int, rollout_length: int, num_minibatches: int, num_updates: int):
    env, env_params = gymnax.make("CartPole-v1")
    obs_dim = env.observation_space(env_params).shape[0]
    num_actions = env.action_space(env_params).n
    batch_size = num_envs * rollout_length
    schedule = optax.linear_schedule(LR, 0.0, num_updates * EPOCHS * num_minibatches)
    tx = optax.chain(optax.clip_by_global_norm(MAX_GRAD_NORM), optax.adam(schedule, eps=1e-5))
    env_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def loss_fn(params: dict, mb: Minibatch) -> jax.Array:
        log_probs = jax.nn.log_softmax(mlp(params["actor"], mb.obs))
        log_prob = jnp.take_along_axis(log_probs, mb.action[:, None], axis=-1)[:, 0]
        ratio = jnp.exp(log_prob - mb.log_prob)
        adv = (mb.advantage - mb.advantage.mean()) / (mb.advantage.std() + 1e-8)
        clipped = jnp.clip(ratio, 1.0 - CLIP_EPS, 1.0 + CLIP_EPS)
        policy_loss = -jnp.mean(jnp.minimum(ratio * adv, clipped * adv))
        entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
        value = value_fn(params, mb.obs)
        value_clipped = mb.value + jnp.clip(value - mb.value, -VALUE_CLIP_EPS, VALUE_CLIP_EPS)
        value_loss = 0.5 * jnp.mean(
            jnp.maximum(jnp.square(value - mb.target), jnp.square(value_clipped - mb.target))
        )
        return policy_loss - ENT_COEF * entropy + VF_COEF * value_loss

    def sgd_step(carry: tuple, mb: Minibatch) -> tuple:
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params, mb)
        # One optimiser per network (as ff_ppo): each is clipped by its own global norm.
        new_params, new_opt = {}, {}
        for name in ("actor", "critic"):
            updates, new_opt[name] = tx.update(grads[name], opt_state[name], params[name])
            new_params[name] = optax.apply_updates(params[name], updates)
        return (new_params, new_opt), None

    def update(carry: tuple, _: Any) -> tuple:
        params, opt_state, env_state, obs, ep_return, key = carry

        def step(c: tuple, _: Any) -> tuple:
            env_state, obs, ep_return, key = c
            key, act_key, env_key = jax.random.split(key, 3)
            logits = mlp(params["actor"], obs)
            action = jax.random.categorical(act_key, logits)
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[
                :, 0
            ]
            value = value_fn(params, obs)
            next_obs, env_state, reward, terminated, truncated, _ = env_step(
                jax.random.split(env_key, num_envs), env_state, action, env_params
            )
            done = jnp.logical_or(terminated, truncated)
            ep_return = ep_return + reward
            finished = jnp.where(done, ep_return, 0.0)
            t = Transition(obs, action, log_prob, value, reward, done, finished)
            return (env_state, next_obs, jnp.where(done, 0.0, ep_return), key), t

        (env_state, obs, ep_return, key), traj = jax.lax.scan(
            step, (env_state, obs, ep_return, key), None, length=rollout_length
        )

        # GAE, PureJaxRL-style: `done` cuts the trace and the bootstrap.
        def gae_step(c: tuple, t: Transition) -> tuple:
            gae, next_value = c
            not_done = 1.0 - t.done.astype(jnp.float32)
            delta = t.reward + GAMMA * next_value * not_done - t.value
            gae = delta + GAMMA * GAE_LAMBDA * not_done * gae
            return (gae, t.value), gae

        last_value = value_fn(params, obs)
        _, advantages = jax.lax.scan(
            gae_step, (jnp.zeros_like(last_value), last_value), traj, reverse=True, unroll=16
        )
        data = Minibatch(
            traj.obs, traj.action, traj.log_prob, traj.value, advantages, advantages + traj.value
        )
        flat = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), data)

        def epoch(c: tuple, _: Any) -> tuple:
            params, opt_state, key = c
            key, perm_key = jax.random.split(key)
            perm = jax.random.permutation(perm_key, batch_size)
            mbs = jax.tree.map(lambda x: x[perm].reshape((num_minibatches, -1) + x.shape[1:]), flat)
            (params, opt_state), _ = jax.lax.scan(sgd_step, (params, opt_state), mbs)
            return (params, opt_state, key), None

        (params, opt_state, key), _ = jax.lax.scan(
            epoch, (params, opt_state, key), None, length=EPOCHS
        )
        stats = (jnp.sum(traj.finished_return), jnp.sum(traj.done))
        return (params, opt_state, env_state, obs, ep_return, key), stats

    def train(key: jax.Array) -> tuple:
        key, actor_key, critic_key, reset_key = jax.random.split(key, 4)
        params = {
            "actor": init_mlp(actor_key, obs_dim, num_actions, 0.01),
            "critic": init_mlp(critic_key, obs_dim, 1, 1.0),
        }
        opt_state = {name: tx.init(p) for name, p in params.items()}
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, num_envs), env_params
        )
        carry = (params, opt_state, env_state, obs, jnp.zeros((num_envs,)), key)
        _, (return_sums, episodes) = jax.lax.scan(update, carry, None, length=num_updates)
        return return_sums, episodes

    return train


def run(
    num_envs: int,
    rollout_length: int,
    num_minibatches: int,
    total_timesteps: int,
    seed: int = 0,
) -> dict:
    """Trains once; SPS counts env steps over the compiled call's wall time only."""
    num_updates = total_timesteps // (num_envs * rollout_length)
    if num_updates < 1 or (num_envs * rollout_length) % num_minibatches:
        raise ValueError("total_timesteps too small or minibatches do not divide the batch")
    train = jax.jit(make_train(num_envs, rollout_length, num_minibatches, num_updates))
    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = train.lower(key).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    return_sums, episodes = jax.block_until_ready(compiled(key))
    seconds = time.perf_counter() - start
    # Training return over the last tenth of updates, like a final logging period.
    tail = max(1, num_updates // 10)
    count = float(np.sum(episodes[-tail:]))
    env_steps = num_updates * num_envs * rollout_length
    return {
        "sps": env_steps / seconds,
        "compile_seconds": compile_seconds,
        "final_train_return": float(np.sum(return_sums[-tail:])) / count if count else float("nan"),
        "train_seconds": seconds,
        "env_steps": env_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--rollout", type=int, default=32)
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args.envs, args.rollout, args.minibatches, args.steps, args.seed)))


if __name__ == "__main__":
    main()
