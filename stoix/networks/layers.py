"""Small building blocks shared by torsos and heads."""

import contextlib
import ctypes
import functools
from typing import Callable, Iterator

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


@functools.cache
def _openblas_thread_setter() -> Callable[[int], int] | None:
    """numpy's bundled OpenBLAS `openblas_set_num_threads_local` (None when not found).

    It sets the BLAS thread count of the calling thread only and returns the previous one.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:  # not Linux: leave numpy's BLAS as it is
        return None
    for path in sorted(paths):
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        return setter
    return None


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Runs numpy's BLAS on the calling thread alone for the duration.

    OpenBLAS's worker threads spin while they wait; next to XLA's busy thread pool on a small
    machine, a 128×128 QR then takes ~100 ms instead of ~2 ms, and network initialisation
    slows to seconds.
    """
    setter = _openblas_thread_setter()
    previous = setter(1) if setter is not None else None
    try:
        yield
    finally:
        if setter is not None and previous is not None:
            setter(previous)


def _orthonormal_columns(gaussian: np.ndarray) -> np.ndarray:
    """Q of the QR decomposition, signs fixed so that R's diagonal is positive (Haar-uniform).

    Works on a stack [..., rows, columns] of matrices, so a vmapped initialiser makes one
    callback for the whole batch (no loop in the compiled program).
    """
    with _single_threaded_blas():
        q, r = np.linalg.qr(gaussian)
    signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    return (q * signs).astype(gaussian.dtype)


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
            vmap_method="expand_dims",
        )
        if num_rows < num_columns:
            q = q.T
        return scale * q.reshape(shape)

    return init


def _symmetric_uniform(bound: float) -> nn.initializers.Initializer:
    """U(-bound, bound); flax's `uniform` only samples [0, scale)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _scaled_noise(key: jax.Array, size: int) -> jax.Array:
    """f(x) = sign(x) sqrt(|x|) of standard normal draws: NoisyNets' factorised noise."""
    noise = jax.random.normal(key, (size,))
    return jnp.sign(noise) * jnp.sqrt(jnp.abs(noise))


class NoisyDense(nn.Module):
    """A dense layer with learned, factorised Gaussian weight noise (NoisyNets).

    Fortunato et al. (2018), "Noisy Networks for Exploration". Weights are
    ``mu + sigma * eps`` where ``eps`` is the outer product of two scaled noise vectors (one per
    input, one per output), so a forward pass draws ``in + out`` normals rather than
    ``in * out``. One noise sample is shared by the whole batch of a call.

    Noise comes from the flax rng stream ``"noise"``: ``apply(..., rngs={"noise": key})`` gives
    a noisy layer (acting and learning), while ``apply(...)`` without that stream uses the mean
    weights only, which is the deterministic network used for greedy evaluation. Initialising
    without a ``"noise"`` rng therefore works too.

    Attributes:
        features: Number of output units.
        sigma_init: sigma0 of the paper; every sigma starts at ``sigma_init / sqrt(in)``.
        kernel_init: Initialiser of the mean kernel; ``None`` gives the paper's
            ``U(-1/sqrt(in), 1/sqrt(in))``. The mean bias always uses the latter.
        use_bias: Whether to add a (noisy) bias.
    """

    features: int
    sigma_init: float = 0.5
    kernel_init: nn.initializers.Initializer | None = None
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layer.

        Args:
            x: Inputs of shape ``[..., in]``.

        Returns:
            Outputs of shape ``[..., features]``.
        """
        x = jnp.asarray(x, jnp.float32)
        in_features = x.shape[-1]
        bound = 1.0 / np.sqrt(in_features)
        mu_init = _symmetric_uniform(bound)
        sigma_init = nn.initializers.constant(self.sigma_init * bound)
        shape = (in_features, self.features)
        kernel_mu = self.param("kernel_mu", self.kernel_init or mu_init, shape)
        kernel_sigma = self.param("kernel_sigma", sigma_init, shape)
        y = x @ kernel_mu
        if self.use_bias:
            bias_mu = self.param("bias_mu", mu_init, (self.features,))
            bias_sigma = self.param("bias_sigma", sigma_init, (self.features,))
            y = y + bias_mu
        if self.has_rng("noise"):
            in_key, out_key = jax.random.split(self.make_rng("noise"))
            eps_in = _scaled_noise(in_key, in_features)
            eps_out = _scaled_noise(out_key, self.features)
            # x @ (sigma * outer(eps_in, eps_out)) == ((x * eps_in) @ sigma) * eps_out, which
            # avoids building an [in, out] noise matrix on every call.
            y = y + ((x * eps_in) @ kernel_sigma) * eps_out
            if self.use_bias:
                y = y + bias_sigma * eps_out
        return y
