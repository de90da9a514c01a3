"""Small building blocks shared by torsos and heads."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
    "sigmoid": nn.sigmoid,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks an activation up by its config name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _orthonormal_columns(gaussian: np.ndarray) -> np.ndarray:
    """Q of the QR decomposition, signs fixed so that R's diagonal is positive (Haar-uniform)."""
    q, r = np.linalg.qr(gaussian)
    return (q * np.sign(np.diag(r))).astype(gaussian.dtype)


def orthogonal(scale: float = 2.0**0.5) -> nn.initializers.Initializer:
    """Flax's orthogonal initialiser, with the QR done by numpy on the host.

    jaxlib 0.10.2's CPU QR kernel hands its batch to the XLA thread pool and blocks on it; when
    as many QRs run at once as the pool has threads (actor and critic layers initialised side
    by side on a 2-core machine), every thread waits and the program hangs for ever. numpy's QR
    runs inside the callback and never waits on that pool. Same distribution and, for the same
    key, the same values as `flax.linen.initializers.orthogonal(scale)`.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"orthogonal initialisation needs at least 2 dimensions, got {shape}")
        num_columns = shape[-1]
        num_rows = int(np.prod(shape)) // num_columns
        matrix_shape = (max(num_rows, num_columns), min(num_rows, num_columns))
        gaussian = jax.random.normal(key, matrix_shape, dtype)
        q = jax.pure_callback(
            _orthonormal_columns,
            jax.ShapeDtypeStruct(matrix_shape, gaussian.dtype),
            gaussian,
            vmap_method="sequential",
        )
        if num_rows < num_columns:
            q = q.T
        return scale * q.reshape(shape)

    return init
