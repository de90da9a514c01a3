"""What a checkpoint records about itself besides the arrays, and how its payload is laid out.

A checkpoint's `meta` item (`<period>/meta/metadata`, JSON) names the format version, the config
fingerprint and resolved config, the period, steps done, metric and device count, and the path,
shape and dtype of every leaf of the payload. This module reads and parses that item, describes
a payload's leaves the same way, compares the two, and turns a restore target into what orbax
reads into. Whether the format version suits this code is the checkpointer's question, not this
module's: fields may mean something else in other versions, so it is asked before parsing.
"""

import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from stoix.checkpointing.integrity import CheckpointUnusable, name_some, short_reason

STATE_ITEM = "state"
META_ITEM = "meta"


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint records besides the arrays.

    Attributes:
        period: evaluation period index just completed (0-based).
        steps_done: environment steps done (per seed) at that point.
        metric: the value used to rank "best" (mean evaluation return).
        format_version: `FORMAT_VERSION` of the code that wrote the checkpoint.
        fingerprint: `config_fingerprint` of the config the checkpoint was written with.
        num_devices: how many devices the learner state was laid out on; None when the
            writer did not say.
    """

    period: int
    steps_done: int
    metric: float
    format_version: int
    fingerprint: str
    num_devices: int | None = None


class LeafSpec(NamedTuple):
    """Where a leaf sits in the payload and what it must look like to be restored into."""

    path: str  # e.g. "params.actor.dense_0.kernel"
    shape: Tuple[int, ...]
    dtype: str


class Metadata(NamedTuple):
    """The parsed `meta` item of one checkpoint."""

    info: CheckpointInfo
    config: Dict[str, Any]  # the full resolved config, logger section included
    leaves: List[LeafSpec]


# ---------------------------------------------------------------------------------------------
# Payload layout
# ---------------------------------------------------------------------------------------------


def leaf_specs(tree: Any) -> List[LeafSpec]:
    """The path, shape and dtype of every leaf of a payload or restore target, in tree order."""
    specs = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = jax.tree_util.keystr(path, simple=True, separator=".") or "<root>"
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        specs.append(LeafSpec(name, tuple(int(d) for d in np.shape(leaf)), str(dtype)))
    return specs


def layout_mismatch(saved: Sequence[LeafSpec], target: Sequence[LeafSpec]) -> str | None:
    """Says how the target differs from the saved payload, or None if they agree."""
    saved_by_path = {spec.path: spec for spec in saved}
    target_by_path = {spec.path: spec for spec in target}
    missing = [path for path in saved_by_path if path not in target_by_path]
    extra = [path for path in target_by_path if path not in saved_by_path]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"only the checkpoint has {name_some(missing)}")
        if extra:
            parts.append(f"only the target has {name_some(extra)}")
        return "its structure differs from the target's: " + "; ".join(parts)
    changed = [
        f"{spec.path}: checkpoint {spec.dtype}{list(spec.shape)}, "
        f"target {target_by_path[spec.path].dtype}{list(target_by_path[spec.path].shape)}"
        for spec in saved
        if spec != target_by_path[spec.path]
    ]
    if changed:
        return "its shapes or dtypes differ from the target's: " + name_some(changed, "; ")
    return None


def restore_spec(leaf: Any) -> Any:
    # A jax leaf becomes an abstract array so orbax reads each shard straight onto the target's
    # devices; a numpy leaf is passed as is, which makes orbax return numpy. Orbax cannot
    # restore into a numpy scalar, so it gets a 0-d array, turned back by `as_target_type`.
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if isinstance(leaf, np.generic):
        return np.asarray(leaf)
    return leaf


def as_target_type(restored: Any, target: Any) -> Any:
    """Undoes `restore_spec`'s widening of a numpy scalar to a 0-d array."""
    return target.dtype.type(restored) if isinstance(target, np.generic) else restored


# ---------------------------------------------------------------------------------------------
# The metadata file of one checkpoint
# ---------------------------------------------------------------------------------------------


def read_raw_metadata(step_dir: Path) -> Any:
    """A checkpoint's metadata as orbax reads the JSON, unchecked; raises whatever orbax raises."""
    return ocp.JsonCheckpointHandler().restore(step_dir / META_ITEM)


def read_metadata_or_skip(step_dir: Path) -> Any:
    """Like `read_raw_metadata`, but an unreadable file makes only this checkpoint unusable."""
    try:
        return read_raw_metadata(step_dir)
    except Exception as error:
        raise CheckpointUnusable(f"has unreadable metadata ({short_reason(error)})") from error


def parse_metadata(raw: Dict[str, Any]) -> Metadata:
    """Types the raw metadata of a checkpoint whose format version has been checked."""
    try:
        num_devices = raw["num_devices"]
        info = CheckpointInfo(
            period=int(raw["period"]),
            steps_done=int(raw["steps_done"]),
            metric=float(raw["metric"]),
            format_version=int(raw["format_version"]),
            fingerprint=str(raw["fingerprint"]),
            num_devices=None if num_devices is None else int(num_devices),
        )
        config = dict(raw["config"])
        leaves = [LeafSpec(str(p), tuple(int(d) for d in s), str(t)) for p, s, t in raw["leaves"]]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointUnusable(f"has unreadable metadata ({short_reason(error)})") from error
    return Metadata(info, config, leaves)


def stored_metric(step_dir: Path) -> float:
    """A checkpoint's rank for "best": its metric, with NaN and unreadable metadata last."""
    try:
        value = float(read_raw_metadata(step_dir)["metric"])
    except Exception:
        # Unrankable checkpoints are the first to go; resuming never needs them.
        return -math.inf
    return -math.inf if math.isnan(value) else value
