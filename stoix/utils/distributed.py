"""Moving data between Python and the devices of every process, and agreeing across processes.

One process (the default) makes each of these a plain copy or a no-op; in a multi-host run
(`stoix.launch.multihost`) they are the only places where processes exchange data outside the
compiled programs.
"""

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

# Run-directory names are short; a fixed width keeps the broadcast one compiled shape.
_TEXT_BYTES = 4096


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always true on one host)."""
    return jax.process_index() == 0


def to_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Host arrays, identical in every process → arrays laid out by `sharding` over all devices.

    Each process supplies only its own devices' slices, so this works whether or not the
    sharding spans other processes' devices.
    """

    def place(leaf: Any) -> jax.Array:
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def to_host(tree: Any) -> Any:
    """Device arrays → numpy arrays of their global values, in every process.

    Arrays spread over other processes' devices are gathered (a collective: every process must
    call this at the same point); arrays this process holds entirely are simply copied.
    """
    leaves = jax.tree.leaves(tree)
    if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def broadcast_text(text: str) -> str:
    """Process 0's `text` in every process (e.g. the run directory, whose name has a clock time)."""
    if jax.process_count() == 1:
        return text
    encoded = text.encode()
    if len(encoded) > _TEXT_BYTES:
        raise ValueError(f"cannot broadcast {len(encoded)} bytes (at most {_TEXT_BYTES})")
    buffer = np.zeros(_TEXT_BYTES, np.uint8)
    buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(received[received != 0].astype(np.uint8)).decode()


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name`; a no-op on one process."""
    if jax.process_count() > 1:
        from orbax.checkpoint import multihost as orbax_multihost

        orbax_multihost.sync_global_processes(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process (every process must call this at the same point);
    e.g. one process was told to stop, so all of them stop after the same period."""
    if jax.process_count() == 1:
        return flag
    gathered = multihost_utils.process_allgather(np.array([flag], np.int32))
    return bool(np.any(gathered))
