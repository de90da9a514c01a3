"""Value-based networks: Q heads (plain, dueling, C51, QR), NoisyDense and the Q-network configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from stoix.base_types import EnvSpec, Observation
from stoix.networks.base import FeedForwardQNetwork, make_q_network
from stoix.networks.heads import (
    INVALID_ACTION_VALUE,
    CategoricalQHead,
    CategoricalQValues,
    QHead,
    QuantileQHead,
    QuantileQValues,
    QValues,
)
from stoix.networks.layers import NoisyDense
from stoix.networks.torso import MLPTorso
from tests.helpers import REPO

NETWORK_CONFIGS = REPO / "stoix" / "configs" / "network"
VECTOR = EnvSpec((4,), "discrete", 4)
GRID = EnvSpec((5, 5, 2), "discrete", 4)


def _observation(spec: EnvSpec, batch: int = 6, mask=None) -> Observation:
    view = jax.random.normal(jax.random.PRNGKey(42), (batch,) + spec.observation_shape)
    if mask is None:
        mask = jnp.ones((batch, spec.num_actions), bool)
    return Observation(view, mask, jnp.zeros((batch,), jnp.int32))


def _build(name: str, spec: EnvSpec) -> FeedForwardQNetwork:
    return make_q_network(OmegaConf.load(NETWORK_CONFIGS / f"{name}.yaml"), spec)


@pytest.mark.parametrize(
    "name, spec, output_type, extra_shape",
    [
        ("mlp_dqn", VECTOR, QValues, None),
        ("mlp_dueling_dqn", VECTOR, QValues, None),
        ("visual_dqn", GRID, QValues, None),
        ("visual_dueling_dqn", GRID, QValues, None),
        ("mlp_c51", VECTOR, CategoricalQValues, 51),
        ("mlp_dueling_c51", VECTOR, CategoricalQValues, 51),
        ("mlp_qr_dqn", VECTOR, QuantileQValues, 51),
        ("mlp_rainbow", VECTOR, CategoricalQValues, 51),
    ],
)
def test_q_network_configs_build_and_apply(name, spec, output_type, extra_shape):
    net = _build(name, spec)
    obs = _observation(spec)
    params = net.init(jax.random.PRNGKey(0), obs)
    if name == "mlp_rainbow":
        # Noisy layers initialise with or without a noise stream, to the same parameters.
        # (Only checked here: every init of a plain network pays for numpy QRs.)
        rngs = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}
        noisy_init = net.init(rngs, obs)
        assert jax.tree.structure(params) == jax.tree.structure(noisy_init)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(noisy_init), strict=True):
            np.testing.assert_array_equal(a, b)

    out = net.apply(params, obs)
    assert isinstance(out, output_type)
    assert out.q_values.shape == (6, spec.num_actions)
    assert bool(jnp.all(jnp.isfinite(out.q_values)))
    if output_type is CategoricalQValues:
        assert out.logits.shape == (6, spec.num_actions, extra_shape)
        np.testing.assert_allclose(out.atoms, np.linspace(0.0, 100.0, extra_shape), atol=1e-5)
    if output_type is QuantileQValues:
        assert out.quantiles.shape == (6, spec.num_actions, extra_shape)

    noisy = [net.apply(params, obs, rngs={"noise": jax.random.PRNGKey(k)}) for k in (1, 2)]
    if name == "mlp_rainbow":
        assert not np.allclose(noisy[0].q_values, noisy[1].q_values)
        np.testing.assert_array_equal(net.apply(params, obs).q_values, out.q_values)
    else:
        # Networks without noisy layers ignore the noise stream.
        np.testing.assert_array_equal(noisy[0].q_values, out.q_values)


def test_make_q_network_rejects_continuous_actions():
    with pytest.raises(ValueError, match="discrete actions"):
        _build("mlp_dqn", EnvSpec((3,), "continuous", 1, (-1.0,), (1.0,)))


@pytest.mark.parametrize(
    "head, field",
    [
        (QHead(action_dim=4, dueling=True), "q_values"),
        (CategoricalQHead(action_dim=4, num_atoms=5, dueling=True), "logits"),
        (QuantileQHead(action_dim=4, num_quantiles=5, dueling=True), "quantiles"),
    ],
)
def test_dueling_heads_combine_value_and_mean_free_advantage(head, field):
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    params = head.init(jax.random.PRNGKey(1), x)
    p = params["params"]
    size = p["value"]["kernel"].shape[-1]
    value = (x @ p["value"]["kernel"] + p["value"]["bias"])[:, None, :]
    advantage = (x @ p["advantage"]["kernel"] + p["advantage"]["bias"]).reshape(6, 4, size)
    out = np.asarray(getattr(head.apply(params, x), field)).reshape(6, 4, size)
    expected = value + advantage - advantage.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    # With a zero advantage layer every action's output is the value stream's.
    zeroed = jax.tree.map(jnp.zeros_like, p["advantage"])
    flat = head.apply({"params": {**p, "advantage": zeroed}}, x)
    out = np.asarray(getattr(flat, field)).reshape(6, 4, size)
    np.testing.assert_allclose(out, np.broadcast_to(value, out.shape), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dueling", [False, True])
def test_categorical_q_values_are_the_expectation(dueling):
    head = CategoricalQHead(action_dim=4, num_atoms=5, v_min=-2.0, v_max=3.0, dueling=dueling)
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    out = head.apply(head.init(jax.random.PRNGKey(1), x), x)
    assert out.atoms.shape == (5,)
    np.testing.assert_allclose(out.atoms, np.linspace(-2.0, 3.0, 5), atol=1e-6)
    probs = jax.nn.softmax(out.logits, axis=-1)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out.q_values, (probs * out.atoms).sum(-1), rtol=1e-5, atol=1e-6)
    assert bool(jnp.all((out.q_values >= -2.0) & (out.q_values <= 3.0)))


def test_categorical_head_rejects_an_empty_support():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="v_max > v_min"):
        CategoricalQHead(action_dim=2, v_min=1.0, v_max=1.0).init(jax.random.PRNGKey(0), x)


def test_quantile_q_values_are_the_quantile_mean():
    head = QuantileQHead(action_dim=4, num_quantiles=5)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    out = head.apply(head.init(jax.random.PRNGKey(1), x), x)
    np.testing.assert_allclose(out.q_values, out.quantiles.mean(-1), rtol=1e-6)


@pytest.mark.parametrize(
    "head, unmasked_field",
    [
        (QHead(action_dim=4), None),
        (QHead(action_dim=4, dueling=True, noisy=True), None),
        (CategoricalQHead(action_dim=4, num_atoms=5), "logits"),
        (QuantileQHead(action_dim=4, num_quantiles=5, dueling=True), "quantiles"),
    ],
)
def test_masked_actions_get_the_invalid_action_value(head, unmasked_field):
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    mask = jnp.array([[True, False, True, False], [False] * 3 + [True], [True] * 4] * 2)
    params = head.init(jax.random.PRNGKey(1), x, mask)
    masked = head.apply(params, x, mask)
    unmasked = head.apply(params, x, jnp.ones_like(mask))
    q, mask = np.asarray(masked.q_values), np.asarray(mask)
    assert np.all(q[~mask] == INVALID_ACTION_VALUE)
    np.testing.assert_array_equal(q[mask], np.asarray(unmasked.q_values)[mask])
    assert np.all(np.asarray(unmasked.q_values) > INVALID_ACTION_VALUE / 2)
    if unmasked_field is not None:
        np.testing.assert_array_equal(
            getattr(masked, unmasked_field), getattr(unmasked, unmasked_field)
        )


def test_noisy_dense_initialisation_and_mean_output():
    layer = NoisyDense(4, sigma_init=0.5)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    params = layer.init(jax.random.PRNGKey(1), x)
    p = params["params"]
    assert set(p) == {"kernel_mu", "kernel_sigma", "bias_mu", "bias_sigma"}
    bound = 1.0 / np.sqrt(8)
    assert np.all(np.abs(p["kernel_mu"]) <= bound) and np.all(np.abs(p["bias_mu"]) <= bound)
    np.testing.assert_allclose(p["kernel_sigma"], 0.5 * bound)
    np.testing.assert_allclose(p["bias_sigma"], 0.5 * bound)
    np.testing.assert_allclose(
        layer.apply(params, x), x @ p["kernel_mu"] + p["bias_mu"], rtol=1e-5, atol=1e-6
    )


def test_noisy_dense_noise_depends_on_the_key_and_trains_sigma():
    layer = NoisyDense(4)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    params = layer.init({"params": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}, x)

    def noisy(p, k):
        return layer.apply(p, x, rngs={"noise": jax.random.PRNGKey(k)})

    np.testing.assert_array_equal(noisy(params, 3), noisy(params, 3))
    assert not np.allclose(noisy(params, 3), noisy(params, 4))
    assert not np.allclose(noisy(params, 3), layer.apply(params, x))

    grads = jax.grad(lambda p: jnp.sum(noisy(p, 3) ** 2))(params)["params"]
    assert np.abs(np.asarray(grads["kernel_sigma"])).sum() > 0
    assert np.abs(np.asarray(grads["bias_sigma"])).sum() > 0
    # Without noise the output does not depend on sigma at all.
    mean_grads = jax.grad(lambda p: jnp.sum(layer.apply(p, x) ** 2))(params)["params"]
    assert not np.any(mean_grads["kernel_sigma"]) and not np.any(mean_grads["bias_sigma"])


def test_mlp_torso_noisy_option_keeps_plain_parameter_names():
    x = jnp.ones((6, 8))
    plain = MLPTorso((8, 4)).init(jax.random.PRNGKey(0), x)["params"]
    assert set(plain) == {"Dense_0", "Dense_1"}
    noisy = MLPTorso((8, 4), noisy=True).init(jax.random.PRNGKey(0), x)["params"]
    assert set(noisy) == {"NoisyDense_0", "NoisyDense_1"}
    assert noisy["NoisyDense_1"]["kernel_mu"].shape == (8, 4)
