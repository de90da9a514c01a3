"""Values as categorical distributions over a fixed support, through an invertible squashing.

MuZero-style learners predict values and rewards as categorical distributions: the scalar is
first squashed by h(x) = sign(x)(√(|x| + 1) − 1) + εx (Pohlen et al., 2018), then spread over
the two support atoms that bracket it ("two-hot"), so the cross-entropy to that target trains
the prediction and the expectation over the support, unsquashed by h⁻¹, recovers the scalar.
Any family that predicts values this way uses this module.

h is rlax's `signed_hyperbolic`, the two-hot projection rlax's `transform_to_2hot`. h⁻¹ is
written here: rlax's `signed_parabolic` takes the closed form
((√(1 + 4ε(|y| + 1 + ε)) − 1) / 2ε)² − 1, whose numerator cancels in float32 (h⁻¹(h(3)) comes
back as 2.99976); multiplying through by the conjugate gives the same value without the
cancellation.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import rlax

EPSILON = 1e-3


class ValueSupport(NamedTuple):
    """Evenly spaced atoms from `minimum` to `maximum` (in squashed units)."""

    minimum: float
    maximum: float
    num_atoms: int

    @property
    def atoms(self) -> jax.Array:
        return jnp.linspace(self.minimum, self.maximum, self.num_atoms)


def squash(x: jax.Array, eps: float = EPSILON) -> jax.Array:
    """h(x) = sign(x)(√(|x| + 1) − 1) + εx."""
    return rlax.signed_hyperbolic(x, eps)


def unsquash(y: jax.Array, eps: float = EPSILON) -> jax.Array:
    """h⁻¹(y), the exact inverse of `squash`, without float32 cancellation.

    Solving h(x) = y for |x|: with s = √(|x| + 1), ε s² + s − (|y| + 1 + ε) = 0, so
    s = 2(|y| + 1 + ε) / (1 + √(1 + 4ε(|y| + 1 + ε))) and |x| = s² − 1.
    """
    c = jnp.abs(y) + 1.0 + eps
    s = 2.0 * c / (1.0 + jnp.sqrt(1.0 + 4.0 * eps * c))
    return jnp.sign(y) * (jnp.square(s) - 1.0)


def scalar_to_support(x: jax.Array, support: ValueSupport, eps: float = EPSILON) -> jax.Array:
    """[...] scalars → [..., num_atoms] two-hot probabilities of their squashed values; values
    beyond the support go wholly to its end atom."""
    squashed = jnp.clip(squash(x, eps), support.minimum, support.maximum)
    return rlax.transform_to_2hot(squashed, support.minimum, support.maximum, support.num_atoms)


def support_to_scalar(
    probabilities: jax.Array, support: ValueSupport, eps: float = EPSILON
) -> jax.Array:
    """[..., num_atoms] probabilities → [...] scalars: the expected atom, unsquashed."""
    expected = jnp.sum(probabilities * support.atoms, axis=-1)
    return unsquash(expected, eps)


def logits_to_scalar(logits: jax.Array, support: ValueSupport, eps: float = EPSILON) -> jax.Array:
    """A network's categorical output [..., num_atoms] → [...] scalar values."""
    return support_to_scalar(jax.nn.softmax(logits, axis=-1), support, eps)
