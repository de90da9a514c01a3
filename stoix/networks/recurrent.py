"""Recurrent Q-networks: torso -> GRU or LSTM core -> torso -> Q head, one time step per call.

A call takes the hidden state, a batch of observations and a `reset` flag per batch element
(True where the observation opens a new episode) and zeroes the hidden state of those elements
before the step, so memory never leaks across an episode boundary. Whole sequences are run by
`unroll`, a scan of that one-step call.
"""

from typing import Any, Callable, Tuple

import flax.linen as nn
import hydra
import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import EnvSpec, Observation, Params
from stoix.networks.heads import QValues
from stoix.networks.layers import orthogonal

# GRU: an array [..., H]. LSTM: a (cell, hidden) pair of such arrays.
Hidden = Any

CELLS = ("gru", "lstm")


def zero_hidden(cell: str, hidden_size: int, batch_shape: Tuple[int, ...]) -> Hidden:
    """The hidden state every episode starts from."""
    zeros = jnp.zeros(batch_shape + (hidden_size,), jnp.float32)
    return (zeros, zeros) if cell == "lstm" else zeros


def reset_hidden(hidden: Hidden, reset: jax.Array) -> Hidden:
    """Zeroes the hidden state of the batch elements whose `reset` flag is True."""
    return jax.tree.map(lambda h: jnp.where(reset[..., None], jnp.zeros_like(h), h), hidden)


class RecurrentCore(nn.Module):
    """One step of a GRU or LSTM cell over the last axis (any leading batch axes)."""

    cell: str = "gru"
    hidden_size: int = 128

    def initial_hidden(self, batch_shape: Tuple[int, ...]) -> Hidden:
        return zero_hidden(self.cell, self.hidden_size, batch_shape)

    @nn.compact
    def __call__(self, hidden: Hidden, x: jax.Array) -> Tuple[Hidden, jax.Array]:
        # flax's default recurrent initialiser is jax's orthogonal, whose LAPACK call deadlocks
        # on jaxlib 0.10.2's CPU backend; ours does the QR in numpy.
        if self.cell == "gru":
            return nn.GRUCell(self.hidden_size, recurrent_kernel_init=orthogonal(1.0))(hidden, x)
        if self.cell == "lstm":
            return nn.OptimizedLSTMCell(self.hidden_size, recurrent_kernel_init=orthogonal(1.0))(
                hidden, x
            )
        raise ValueError(f"unknown recurrent cell '{self.cell}'; choose one of {list(CELLS)}")


class RecurrentQNetwork(nn.Module):
    """(hidden, observation, reset) -> (hidden, QValues) for one time step."""

    pre_torso: nn.Module
    core: RecurrentCore
    post_torso: nn.Module
    q_head: nn.Module

    @nn.compact
    def __call__(
        self, hidden: Hidden, observation: Observation, reset: jax.Array
    ) -> Tuple[Hidden, QValues]:
        hidden = reset_hidden(hidden, reset)
        hidden, features = self.core(hidden, self.pre_torso(observation.agent_view))
        return hidden, self.q_head(self.post_torso(features), observation.action_mask)

    def initial_hidden(self, batch_shape: Tuple[int, ...]) -> Hidden:
        return self.core.initial_hidden(batch_shape)


def unroll(
    apply: Callable[..., Tuple[Hidden, QValues]],
    params: Params,
    hidden: Hidden,
    observations: Observation,
    resets: jax.Array,
) -> Tuple[Hidden, Tuple[jax.Array, Hidden]]:
    """Runs a recurrent Q-network over time-major sequences.

    Args:
        apply: the network's apply function.
        params: its variables.
        hidden: hidden state before the first step, [B, ...].
        observations: [T, B, ...].
        resets: [T, B] True where the observation opens a new episode.

    Returns:
        The hidden state after the last step, and per step the Q-values [T, B, A] and the
        hidden state after that step (what the next observation of the same episode sees).
    """

    def step(h: Hidden, inputs: Tuple[Observation, jax.Array]):
        observation, reset = inputs
        h, out = apply(params, h, observation, reset)
        return h, (out.q_values, h)

    return jax.lax.scan(step, hidden, (observations, resets))


def make_recurrent_q_network(network_cfg: DictConfig, spec: EnvSpec) -> RecurrentQNetwork:
    """Builds the recurrent Q network from `network.q_network` (pre_torso, core, post_torso,
    q_head) for this env's discrete actions."""
    if spec.action_kind != "discrete":
        raise ValueError(
            f"Q networks need discrete actions, but the environment's are {spec.action_kind}"
        )
    cfg = network_cfg.q_network
    if "core" not in cfg:
        raise ValueError(
            "the network config has no q_network.core (a recurrent cell); "
            "use a recurrent network such as network=rnn_pqn"
        )
    core = hydra.utils.instantiate(cfg.core)
    if core.cell not in CELLS:
        raise ValueError(f"network.q_network.core.cell='{core.cell}'; choose one of {list(CELLS)}")
    return RecurrentQNetwork(
        pre_torso=hydra.utils.instantiate(cfg.pre_torso),
        core=core,
        post_torso=hydra.utils.instantiate(cfg.post_torso),
        q_head=hydra.utils.instantiate(cfg.q_head, action_dim=spec.num_actions),
    )
