"""The named axes of a compiled learner and the one cross-replica mean.

Parallel axes of the Anakin runner, outermost first: devices (`shard_map` over a 1-D mesh named
`DEVICE_AXIS`), seeds (`vmap` named `SEED_AXIS`, never averaged together), update batch (`vmap`
named `BATCH_AXIS`). Sebulba's learner uses the device axis only. Systems average gradients and
statistics with `pmean_replicas`, which the runner binds to the axes a seed's replicas span.
This module is part of the floor: it imports nothing of ours.
"""

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Tuple

import jax

DEVICE_AXIS = "device"
SEED_AXIS = "seed"
BATCH_AXIS = "batch"


# The named axes that replicas of one seed are spread over, as bound while `learn` is traced:
# the update-batch axis is mapped only when it has more than one slot (see `map_leading_axis`).
_replica_axes: ContextVar[Tuple[str, ...]] = ContextVar(
    "replica_axes", default=(BATCH_AXIS, DEVICE_AXIS)
)


def pmean_replicas(tree: Any) -> Any:
    """Averages gradients (or statistics) over the update batch and the devices of one seed."""
    return jax.lax.pmean(tree, axis_name=_replica_axes.get())


@contextmanager
def replicas_over(axes: Tuple[str, ...]) -> Iterator[None]:
    """Binds the axes `pmean_replicas` averages over while a learner function is traced."""
    token = _replica_axes.set(axes)
    try:
        yield
    finally:
        _replica_axes.reset(token)


def map_leading_axis(fn: Callable[[Any], Any], size: int, axis_name: str) -> Callable[[Any], Any]:
    """`vmap` over the leading axis, or a plain call on its only slice when it has size one.

    A vmap of size one is not free on CPU: its batched matmuls and gathers cost ~5% of training
    throughput at 128 envs, and most runs have one seed and no update batch.
    """
    if size > 1:
        return jax.vmap(fn, axis_name=axis_name)

    def only_slice(tree: Any) -> Any:
        return jax.tree.map(lambda x: x[None], fn(jax.tree.map(lambda x: x[0], tree)))

    return only_slice
