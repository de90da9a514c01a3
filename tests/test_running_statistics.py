import jax.numpy as jnp
import numpy as np

from stoix.utils.running_statistics import init_statistics, normalise, update_statistics


def test_running_statistics_match_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(5, 64, 3)).astype(np.float32)
    stats = init_statistics((3,))
    for batch in data:
        stats = update_statistics(stats, jnp.asarray(batch))
    flat = data.reshape(-1, 3)
    np.testing.assert_allclose(stats.mean, flat.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.variance, flat.var(0), rtol=1e-3)
    assert float(stats.count) == 5 * 64
    normalised = normalise(stats, jnp.asarray(flat))
    np.testing.assert_allclose(np.asarray(normalised).mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(normalised).std(0), 1.0, rtol=1e-3)
