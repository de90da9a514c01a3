"""Networks built from `network=` configs: initialisers, torsos, heads and their options."""

import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.base_types import EnvSpec, Observation
from stoix.networks.base import make_actor, make_critic
from stoix.networks.distributions import greedy_action, policy_entropy
from stoix.networks.heads import CategoricalHead, DiscreteQHead, TanhNormalHead
from stoix.networks.layers import orthogonal
from stoix.networks.torso import CNNTorso, MLPTorso
from stoix.utils.entry import compose_config
from tests.helpers import REPO


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (3, 3, 2, 8)])
def test_orthogonal_matches_flax_and_is_orthogonal(shape):
    key = jax.random.PRNGKey(3)
    ours = np.asarray(orthogonal(2.0)(key, shape))
    # One QR at a time (eager, unbatched) is the case jaxlib's own kernel handles safely.
    reference = np.asarray(nn.initializers.orthogonal(2.0)(key, shape))
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    matrix = ours.reshape(-1, shape[-1]) / 2.0
    small = min(matrix.shape)
    gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)


def test_orthogonal_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        orthogonal()(jax.random.PRNGKey(0), (4,))


def test_concurrent_orthogonal_initialisation_does_not_hang():
    # jaxlib 0.10.2's CPU QR deadlocks when as many QRs run at once as XLA has pool threads:
    # this program (three networks initialised side by side, vmapped over seeds) hung on a
    # 2-core machine with flax's initialiser. It must finish well within the timeout.
    script = textwrap.dedent(
        """
        import flax.linen as nn, jax, jax.numpy as jnp
        from stoix.networks.layers import orthogonal

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                for _ in range(3):
                    x = nn.Dense(64, kernel_init=orthogonal(1.0))(x)
                return x

        def three(key):
            x = jnp.zeros((4, 32))
            return [Net().init(k, x) for k in jax.random.split(key, 3)]

        init = jax.jit(jax.vmap(three))
        for i in range(100):
            jax.block_until_ready(init(jax.random.split(jax.random.PRNGKey(i), 4)))
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


def _observation(agent_view, num_actions=3, mask=None):
    batch = agent_view.shape[:1]
    if mask is None:
        mask = jnp.ones(batch + (num_actions,), bool)
    return Observation(agent_view, mask, jnp.zeros(batch, jnp.int32))


def test_mlp_torso_options_change_the_network():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
    plain = MLPTorso((16, 8), activation="relu")
    params = plain.init(jax.random.PRNGKey(1), x)
    out = plain.apply(params, x)
    assert out.shape == (5, 8) and bool(jnp.all(out >= 0))
    tanh_out = MLPTorso((16, 8), activation="tanh").apply(params, x)
    assert bool(jnp.all(jnp.abs(tanh_out) < 1)) and bool(jnp.any(tanh_out < 0))
    normed = MLPTorso((16, 8), activation="tanh", use_layer_norm=True)
    normed_params = normed.init(jax.random.PRNGKey(1), x)
    assert "LayerNorm_0" in normed_params["params"]
    # The input LayerNorm normalises the 7 input features before the first dense layer, so
    # scaling the input changes nothing.
    input_normed = MLPTorso((16, 8), normalise_input=True)
    input_params = input_normed.init(jax.random.PRNGKey(1), x)
    assert input_params["params"]["LayerNorm_0"]["scale"].shape == (7,)
    np.testing.assert_allclose(
        input_normed.apply(input_params, 100.0 * x), input_normed.apply(input_params, x), atol=1e-4
    )
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        MLPTorso((4,), activation="swishy").init(jax.random.PRNGKey(1), x)


def test_cnn_torso_keeps_leading_axes():
    images = jnp.ones((2, 3, 10, 10, 4))  # [T, N, H, W, C]
    torso = CNNTorso(channel_sizes=(8,), kernel_sizes=(3,), strides=(2,), hidden_sizes=(32,))
    params = torso.init(jax.random.PRNGKey(0), images)
    assert params["params"]["Conv_0"]["kernel"].shape == (3, 3, 4, 8)
    assert torso.apply(params, images).shape == (2, 3, 32)


def test_categorical_head_masks_invalid_actions():
    head = CategoricalHead(action_dim=4)
    features = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
    mask = jnp.array([[True, False, True, False]] * 6)
    params = head.init(jax.random.PRNGKey(1), features, mask)
    dist = head.apply(params, features, mask)
    probs = np.asarray(dist.probs)
    assert np.all(probs[:, [1, 3]] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    samples = dist.sample(seed=jax.random.PRNGKey(2), sample_shape=(200,))
    assert set(np.unique(np.asarray(samples))) <= {0, 2}
    assert set(np.asarray(greedy_action(dist))) <= {0, 2}


def test_tanh_normal_head_stays_within_bounds():
    head = TanhNormalHead(action_dim=2, minimum=(-2.0, 0.0), maximum=(2.0, 1.0))
    features = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    params = head.init(jax.random.PRNGKey(1), features)
    dist = head.apply(params, features)
    actions = np.asarray(dist.sample(seed=jax.random.PRNGKey(2)))
    assert np.all(actions[:, 0] >= -2.0) and np.all(actions[:, 0] <= 2.0)
    assert np.all(actions[:, 1] >= 0.0) and np.all(actions[:, 1] <= 1.0)
    greedy = np.asarray(greedy_action(dist))
    assert greedy.shape == (64, 2) and np.all(np.isfinite(np.asarray(policy_entropy(dist))))


def test_q_head_has_one_value_per_action():
    head = DiscreteQHead(action_dim=5)
    features = jnp.ones((3, 8))
    params = head.init(jax.random.PRNGKey(0), features)
    assert head.apply(params, features).shape == (3, 5)


@pytest.mark.parametrize(
    "network, spec, view_shape",
    [
        ("mlp", EnvSpec((4,), "discrete", 2), (4,)),
        ("cnn", EnvSpec((10, 10, 4), "discrete", 3), (10, 10, 4)),
        ("mlp_continuous", EnvSpec((3,), "continuous", 1, (-2.0,), (2.0,)), (3,)),
    ],
)
def test_network_configs_build_actor_and_critic(network, spec, view_shape):
    cfg = compose_config("ff_ppo", [f"network={network}"]).network
    actor, critic = make_actor(cfg, spec), make_critic(cfg)
    obs = _observation(jnp.zeros((5,) + view_shape), num_actions=max(spec.num_actions, 1))
    actor_params = actor.init(jax.random.PRNGKey(0), obs)
    critic_params = critic.init(jax.random.PRNGKey(1), obs)
    action = actor.apply(actor_params, obs).sample(seed=jax.random.PRNGKey(2))
    expected = (5,) if spec.action_kind == "discrete" else (5, spec.num_actions)
    assert action.shape == expected
    assert critic.apply(critic_params, obs).shape == (5,)


def test_gaussian_policy_entropy_depends_on_its_scale():
    # distrax's MultivariateNormalDiag is a Transformed standard normal: its entropy must be its
    # own, not the base's constant 1.419 per dimension (an entropy bonus would have no gradient).
    import distrax
    import jax.numpy as jnp

    dist = distrax.MultivariateNormalDiag(jnp.array([0.5, -1.0]), jnp.array([0.1, 2.0]))
    expected = np.log(2 * np.pi * np.e) + np.log(0.1) + np.log(2.0)
    np.testing.assert_allclose(policy_entropy(dist), expected, rtol=1e-6)
    np.testing.assert_allclose(greedy_action(dist), [0.5, -1.0])
