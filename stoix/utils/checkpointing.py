"""Versioned, atomic checkpoints of the full learner state, built on orbax.

A run saves once per evaluation period; a run killed at any moment (kill -9 included) resumes
from its latest checkpoint and, given the same config, ends bit-for-bit where the
uninterrupted run would have. Anything that makes a checkpoint unusable (missing, corrupt,
another format version, another config, another state layout) is refused with a one-sentence
`CheckpointError` rather than a library traceback.

On-disk layout of a checkpointer's `directory` (normally `<runs_root>/<run_id>/checkpoints`)::

    <period>/                 one complete checkpoint; orbax writes it as
                              `<period>.orbax-checkpoint-tmp-<n>/` and renames it once complete
      state/                  the payload pytree (orbax StandardSave: OCDBT/zarr array store)
      meta/metadata           JSON: format version, config fingerprint, resolved config, period,
                              steps done, metric, and the path, shape and dtype of every leaf
      metrics/metrics         JSON: the metric orbax ranks checkpoints by to keep the best
      _CHECKPOINT_METADATA    orbax's own step metadata
      integrity.json          size and CRC32 of every file under state/ and meta/
    _deleting/                checkpoints dropped by the retention policy, about to be deleted
"""

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import zlib
from concurrent import futures
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_policies

from stoix.utils.distributed import barrier, is_primary

# 2: PPO learner states carry the next observation instead of the whole timestep.
FORMAT_VERSION: int = 2

_STATE_ITEM = "state"
_META_ITEM = "meta"
# Dropped checkpoints are first renamed here (atomic), then deleted: a kill during the slow
# recursive delete can then never leave a half-deleted `<period>/` that looks like a checkpoint.
_TRASH_DIR = "_deleting"
# Orbax's array store has no checksums: a flipped bit in array data is restored silently, and a
# truncated file fails deep inside its async readers with a flood of tracebacks. Checking the
# files first turns both into one clear sentence.
_INTEGRITY_FILE = "integrity.json"
_INTEGRITY_ITEMS = (_STATE_ITEM, _META_ITEM)
_READ_CHUNK_BYTES = 16 * 1024 * 1024
# Paths, sinks and checkpoint switches live here: none of them changes the numbers.
_IGNORED_CONFIG_SECTION = "logger"
_IGNORED_ARCH_KEY = "distributed"
_MAX_NAMED_ITEMS = 3
_FINGERPRINT_CHARS = 16
# Multi-host saves end at a barrier whose name must never repeat; every process counts its saves
# in the same order.
_SAVE_COUNT = itertools.count()


class CheckpointError(Exception):
    """One-line, user-facing reason a checkpoint cannot be used."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint records besides the arrays.

    Attributes:
        period: evaluation period index just completed (0-based).
        steps_done: environment steps done (per seed) at that point.
        metric: the value used to rank "best" (mean evaluation return).
        format_version: `FORMAT_VERSION` of the code that wrote the checkpoint.
        fingerprint: `config_fingerprint` of the config the checkpoint was written with.
    """

    period: int
    steps_done: int
    metric: float
    format_version: int
    fingerprint: str


class _LeafSpec(NamedTuple):
    """Where a leaf sits in the payload and what it must look like to be restored into."""

    path: str  # e.g. "params.actor.dense_0.kernel"
    shape: Tuple[int, ...]
    dtype: str


class _Metadata(NamedTuple):
    """The parsed `meta` item of one checkpoint."""

    info: CheckpointInfo
    config: Dict[str, Any]  # the full resolved config, logger section included
    leaves: List[_LeafSpec]


class _OrbaxInfoFilter(logging.Filter):
    """Drops orbax's per-save INFO chatter; its warnings and errors still get through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def _silence_orbax_info() -> None:
    # Orbax logs through absl, whose records all go to the "absl" Python logger; a filter there
    # (rather than a level) leaves other absl users' INFO logs alone.
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxInfoFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxInfoFilter())


_silence_orbax_info()


def _name_some(items: Sequence[str], separator: str = ", ") -> str:
    named = separator.join(items[:_MAX_NAMED_ITEMS])
    hidden = len(items) - _MAX_NAMED_ITEMS
    return f"{named} (and {hidden} more)" if hidden > 0 else named


def _short_reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


# ---------------------------------------------------------------------------------------------
# Config fingerprints
# ---------------------------------------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    """Converts a config (dicts, DictConfig, lists, numpy scalars) into JSON-ready values."""
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_to_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _numeric_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a config that can change a run's numbers, as plain values."""
    plain = _to_plain(config)
    plain.pop(_IGNORED_CONFIG_SECTION, None)
    # Which process this is and where its coordinator listens differ between the processes of
    # one run and between jobs; the devices they add up to are what the numbers depend on, and
    # those shape the learner state, which restore checks leaf by leaf.
    arch = plain.get("arch")
    if isinstance(arch, dict):
        arch.pop(_IGNORED_ARCH_KEY, None)
    return plain


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """Stable hash of a resolved plain-dict config, ignoring the top-level "logger" section
    and `arch.distributed`.

    Paths, sinks and checkpoint switches don't change the numbers, so a run may be resumed
    with different ones.

    Args:
        config: the resolved config, as nested mappings and sequences of plain values.

    Returns:
        A short hexadecimal digest, equal for configs that are equal outside "logger".
    """
    digest = hashlib.sha256(_canonical_json(_numeric_config(config)).encode("utf-8"))
    return digest.hexdigest()[:_FINGERPRINT_CHARS]


def _flatten_config(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """Lines such as "system.epochs: checkpoint 4, now 2", sorted by dotted key."""
    absent = "<absent>"
    saved_flat = _flatten_config(_numeric_config(saved))
    current_flat = _flatten_config(_numeric_config(current))
    differences = []
    for key in sorted(saved_flat.keys() | current_flat.keys()):
        # JSON text rather than ==, so that 1 and 1.0 (which hash differently) differ here too.
        before = _canonical_json(saved_flat[key]) if key in saved_flat else absent
        now = _canonical_json(current_flat[key]) if key in current_flat else absent
        if before != now:
            differences.append(f"{key}: checkpoint {before}, now {now}")
    return differences


# ---------------------------------------------------------------------------------------------
# Payload layout
# ---------------------------------------------------------------------------------------------


def _leaf_specs(tree: Any) -> List[_LeafSpec]:
    specs = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = jax.tree_util.keystr(path, simple=True, separator=".") or "<root>"
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        specs.append(_LeafSpec(name, tuple(int(d) for d in np.shape(leaf)), str(dtype)))
    return specs


def _layout_mismatch(saved: Sequence[_LeafSpec], target: Sequence[_LeafSpec]) -> str | None:
    """Says how the target differs from the saved payload, or None if they agree."""
    saved_by_path = {spec.path: spec for spec in saved}
    target_by_path = {spec.path: spec for spec in target}
    missing = [path for path in saved_by_path if path not in target_by_path]
    extra = [path for path in target_by_path if path not in saved_by_path]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"only the checkpoint has {_name_some(missing)}")
        if extra:
            parts.append(f"only the target has {_name_some(extra)}")
        return "its structure differs from the target's: " + "; ".join(parts)
    changed = [
        f"{spec.path}: checkpoint {spec.dtype}{list(spec.shape)}, "
        f"target {target_by_path[spec.path].dtype}{list(target_by_path[spec.path].shape)}"
        for spec in saved
        if spec != target_by_path[spec.path]
    ]
    if changed:
        return "its shapes or dtypes differ from the target's: " + _name_some(changed, "; ")
    return None


def _restore_spec(leaf: Any) -> Any:
    # A jax leaf becomes an abstract array so orbax reads each shard straight onto the target's
    # devices; a numpy leaf is passed as is, which makes orbax return numpy. Orbax cannot
    # restore into a numpy scalar, so it gets a 0-d array, turned back by `_as_target_type`.
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if isinstance(leaf, np.generic):
        return np.asarray(leaf)
    return leaf


def _as_target_type(restored: Any, target: Any) -> Any:
    return target.dtype.type(restored) if isinstance(target, np.generic) else restored


# ---------------------------------------------------------------------------------------------
# Files of one checkpoint
# ---------------------------------------------------------------------------------------------


def _read_raw_metadata(step_dir: Path) -> Any:
    return ocp.JsonCheckpointHandler().restore(step_dir / _META_ITEM)


def _check_format_version(raw: Any, step_dir: Path) -> None:
    # Checked before anything else: other fields may mean something else in other versions.
    if not isinstance(raw, dict) or not isinstance(raw.get("format_version"), int):
        raise CheckpointError(f"Checkpoint {step_dir} has unreadable metadata (no format version).")
    if raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {step_dir} has format version {raw['format_version']}, but this code "
            f"reads version {FORMAT_VERSION}; start a new run or use a matching Stoix version."
        )


def _parse_metadata(raw: Dict[str, Any], step_dir: Path) -> _Metadata:
    try:
        info = CheckpointInfo(
            period=int(raw["period"]),
            steps_done=int(raw["steps_done"]),
            metric=float(raw["metric"]),
            format_version=int(raw["format_version"]),
            fingerprint=str(raw["fingerprint"]),
        )
        config = dict(raw["config"])
        leaves = [_LeafSpec(str(p), tuple(int(d) for d in s), str(t)) for p, s, t in raw["leaves"]]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"Checkpoint {step_dir} has unreadable metadata ({_short_reason(error)})."
        ) from error
    return _Metadata(info, config, leaves)


def _file_size_and_crc(path: Path) -> List[int]:
    size, crc = 0, 0
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_CHUNK_BYTES):
            size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    return [size, crc]


def _checksum_files(step_dir: Path, relative_paths: Sequence[str]) -> Dict[str, List[int]]:
    # zlib releases the GIL on large buffers, so threads checksum several array files at once.
    with futures.ThreadPoolExecutor() as pool:
        sums = list(pool.map(lambda rel: _file_size_and_crc(step_dir / rel), relative_paths))
    return dict(zip(relative_paths, sums, strict=True))


def _write_integrity(step_dir: Path) -> None:
    """Records the checksums of a committed checkpoint, atomically (temporary file + rename)."""
    if jax.process_index() != 0:
        return
    files = sorted(
        path.relative_to(step_dir).as_posix()
        for item in _INTEGRITY_ITEMS
        for path in (step_dir / item).rglob("*")
        if path.is_file()
    )
    partial = step_dir / f"{_INTEGRITY_FILE}.partial"
    partial.write_text(json.dumps(_checksum_files(step_dir, files)))
    os.replace(partial, step_dir / _INTEGRITY_FILE)


def _verify_integrity(step_dir: Path) -> None:
    """Raises CheckpointError if a file restore reads differs from when it was saved."""
    manifest = step_dir / _INTEGRITY_FILE
    if not manifest.is_file():
        # Only a kill between orbax's commit and the manifest write leads here; orbax's atomic
        # rename still vouches that the checkpoint is complete.
        return
    try:
        expected = {
            str(rel): [int(size), int(crc)]
            for rel, (size, crc) in json.loads(manifest.read_text()).items()
        }
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"Checkpoint {step_dir} has an unreadable {_INTEGRITY_FILE} ({_short_reason(error)})."
        ) from error
    actual = _checksum_files(step_dir, [rel for rel in expected if (step_dir / rel).is_file()])
    problems = []
    for rel, (size, crc) in expected.items():
        if rel not in actual:
            problems.append(f"{rel} is missing")
        elif actual[rel][0] != size:
            problems.append(f"{rel} has {actual[rel][0]} bytes instead of {size}")
        elif actual[rel][1] != crc:
            problems.append(f"{rel} has been altered")
    if problems:
        raise CheckpointError(f"Checkpoint {step_dir} is corrupt: {_name_some(problems, '; ')}.")


def _committed_step_dirs(directory: Path) -> List[Path]:
    """Complete checkpoints: orbax gives a step directory its bare number only once committed."""
    if not directory.is_dir():
        return []
    return [path for path in directory.iterdir() if path.name.isdigit() and path.is_dir()]


def _rank(metrics: Mapping[str, Any]) -> float:
    # NaN would make the best-N sort meaningless; it ranks below every real value instead.
    value = float(metrics["metric"])
    return -math.inf if math.isnan(value) else value


def _purge_trash(directory: Path) -> None:
    if jax.process_index() == 0:
        shutil.rmtree(directory / _TRASH_DIR, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Checkpointer
# ---------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves and restores the full learner state of one run, keeping the latest and the best.

    Every save is blocking and atomic: when `save` returns the checkpoint is complete on disk,
    and a kill during `save` leaves the earlier checkpoints intact and nothing `restore` would
    pick up. Retention keeps the `keep_latest` most recent checkpoints and the `keep_best`
    highest-metric ones (a checkpoint can be both).
    """

    def __init__(
        self,
        directory: Path,
        config: Mapping[str, Any],
        keep_latest: int = 1,
        keep_best: int = 1,
    ) -> None:
        """Opens the checkpoint directory of a run, without creating it.

        Args:
            directory: where the run's checkpoints live; created by the first `save`.
            config: the run's resolved config; stored in every checkpoint, compared on restore.
            keep_latest: how many of the most recent checkpoints to keep (at least 1: resuming
                needs the latest).
            keep_best: how many of the highest-metric checkpoints to keep.

        Raises:
            ValueError: a retention count is out of range.
            CheckpointError: the existing checkpoints cannot even be listed.
        """
        if keep_latest < 1:
            raise ValueError(
                f"keep_latest must be at least 1 (resuming needs it), not {keep_latest}."
            )
        if keep_best < 0:
            raise ValueError(f"keep_best must be non-negative, not {keep_best}.")
        self._directory = Path(directory).absolute()
        self._config: Dict[str, Any] = _to_plain(config)
        self._fingerprint = config_fingerprint(config)
        if is_primary():
            _purge_trash(self._directory)
        retention = ocp_policies.AnyPreservationPolicy(
            [
                ocp_policies.LatestN(n=keep_latest),
                ocp_policies.BestN(
                    get_metric_fn=_rank, n=keep_best, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            # best_fn only makes orbax store each step's metrics; `retention` decides what stays.
            best_fn=_rank,
            preservation_policy=retention,
            enable_async_checkpointing=False,
            # Leftovers of a save killed half-way are removed, never mistaken for checkpoints.
            cleanup_tmp_directories=True,
            todelete_subdir=_TRASH_DIR,
            # Restoring from a mistyped path must not create it.
            create=False,
        )
        try:
            self._manager = ocp.CheckpointManager(self._directory, options=options)
        except Exception as error:
            raise CheckpointError(
                f"Cannot read the checkpoints in {self._directory} ({_short_reason(error)})."
            ) from error

    @property
    def directory(self) -> Path:
        """Where this checkpointer's checkpoints live."""
        return self._directory

    def save(self, period: int, payload: Any, metric: float, steps_done: int) -> None:
        """Writes one complete checkpoint, then applies the retention policy.

        Args:
            period: the evaluation period just completed; must exceed every saved period.
            payload: the learner state: a pytree of jax arrays (possibly sharded) and numpy
                arrays.
            metric: the value that ranks checkpoints for "best" (higher is better).
            steps_done: environment steps done (per seed) so far.

        Raises:
            ValueError: `period` is not after the latest saved period.
        """
        period = int(period)
        latest = self._manager.latest_step()
        if latest is not None and period <= latest:
            raise ValueError(
                f"Cannot save period {period} in {self._directory}: it already holds period "
                f"{latest}, and periods must increase."
            )
        metadata = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self._fingerprint,
            "period": period,
            "steps_done": int(steps_done),
            "metric": float(metric),
            "config": self._config,
            "leaves": [[s.path, list(s.shape), s.dtype] for s in _leaf_specs(payload)],
        }
        self._directory.mkdir(parents=True, exist_ok=True)
        # Arrays and metadata are items of one step directory, renamed into place as a unit, so
        # they always come from the same save.
        self._manager.save(
            period,
            args=ocp.args.Composite(
                **{
                    _STATE_ITEM: ocp.args.StandardSave(payload),
                    _META_ITEM: ocp.args.JsonSave(metadata),
                }
            ),
            metrics={"metric": float(metric)},
            force=True,
        )
        self._manager.wait_until_finished()
        # In a multi-host run orbax has every process write the array shards it holds; the
        # files describing the whole checkpoint are process 0's.
        if is_primary():
            _write_integrity(self._directory / str(period))
            _purge_trash(self._directory)
        barrier(f"stoix_checkpoint_{next(_SAVE_COUNT)}")

    def latest_period(self) -> int | None:
        """The most recent saved period, or None when there is no checkpoint."""
        return self._manager.latest_step()

    def restore(self, target: Any, period: int | None = None) -> Tuple[Any, CheckpointInfo]:
        """Reads a checkpoint back into arrays laid out like `target`.

        Args:
            target: a pytree shaped like the saved payload whose leaves (jax arrays, possibly
                sharded, or numpy arrays) give the shapes, dtypes and placement to restore into.
            period: which checkpoint to read; the latest when None.

        Returns:
            The restored payload, with the target's structure, leaf types and shardings, and
            what the checkpoint recorded about itself.

        Raises:
            CheckpointError: there is no such checkpoint, or it is corrupt, or it was written by
                another format version or config, or it differs from `target` in structure,
                shape or dtype.
        """
        periods = self._manager.all_steps()
        if not periods:
            raise CheckpointError(f"No checkpoint found in {self._directory}.")
        if period is None:
            period = max(periods)
        elif period not in periods:
            raise CheckpointError(
                f"No checkpoint for period {period} in {self._directory}; it holds periods "
                f"{sorted(periods)}."
            )
        step_dir = self._directory / str(period)

        # CHECK THE CHECKPOINT AGAINST THIS RUN
        try:
            raw = _read_raw_metadata(step_dir)
        except Exception as error:
            _verify_integrity(step_dir)  # a damaged file is the more precise explanation
            raise CheckpointError(
                f"Checkpoint {step_dir} has unreadable metadata ({_short_reason(error)})."
            ) from error
        _check_format_version(raw, step_dir)
        _verify_integrity(step_dir)
        metadata = _parse_metadata(raw, step_dir)
        if metadata.info.fingerprint != self._fingerprint:
            differences = _config_differences(metadata.config, self._config)
            detail = _name_some(differences, "; ") if differences else "fingerprints differ"
            raise CheckpointError(
                f"Checkpoint {step_dir} was written with a different config ({detail}); "
                "resume with the original config or start a new run."
            )
        mismatch = _layout_mismatch(metadata.leaves, _leaf_specs(target))
        if mismatch is not None:
            raise CheckpointError(f"Checkpoint {step_dir} does not fit this run: {mismatch}.")

        # READ THE ARRAYS ONTO THE TARGET'S DEVICES
        abstract_target = jax.tree.map(_restore_spec, target)
        try:
            restored = self._manager.restore(
                period,
                args=ocp.args.Composite(**{_STATE_ITEM: ocp.args.StandardRestore(abstract_target)}),
            )[_STATE_ITEM]
            restored = jax.tree.map(_as_target_type, restored, target)
        except Exception as error:
            raise CheckpointError(
                f"Checkpoint {step_dir} is corrupt or unreadable ({_short_reason(error)})."
            ) from error
        # Orbax trusts its stored array metadata; arrays that disagree with ours must not reach
        # the learner.
        same_structure = jax.tree.structure(restored) == jax.tree.structure(target)
        if not same_structure or _leaf_specs(restored) != _leaf_specs(target):
            raise CheckpointError(
                f"Checkpoint {step_dir} is corrupt: its arrays do not match its own metadata."
            )
        return restored, metadata.info

    def close(self) -> None:
        """Finishes pending orbax work and releases its resources."""
        self._manager.close()
        if is_primary():
            _purge_trash(self._directory)

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def find_resumable_run(runs_root: Path, config: Mapping[str, Any]) -> Path | None:
    """The most recently modified run directory under `runs_root` that this config can resume.

    A run directory qualifies when its `checkpoints/` subfolder holds at least one committed
    checkpoint with this config's fingerprint. A run's modification time is the latest of its
    directory's and its matching checkpoints' (a save touches the checkpoint, not the run
    directory). Unreadable checkpoints don't match; `restore` explains them when asked.

    Args:
        runs_root: the folder whose direct subfolders are run directories.
        config: the resolved config of the run about to start.

    Returns:
        The run directory, or None when no run matches.
    """
    root = Path(runs_root)
    if not root.is_dir():
        return None
    fingerprint = config_fingerprint(config)
    newest: Tuple[float, Path] | None = None
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        matching_times = []
        for step_dir in _committed_step_dirs(run_dir / "checkpoints"):
            try:
                raw = _read_raw_metadata(step_dir)
            except Exception:
                # Not resumable as far as this search goes; restore() explains it if asked.
                continue
            if isinstance(raw, dict) and raw.get("fingerprint") == fingerprint:
                matching_times.append(step_dir.stat().st_mtime)
        if not matching_times:
            continue
        modified = max(max(matching_times), run_dir.stat().st_mtime)
        if newest is None or modified > newest[0]:
            newest = (modified, run_dir)
    return None if newest is None else newest[1]
