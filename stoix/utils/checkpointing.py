"""Versioned, atomic checkpoints of the full learner state, built on orbax.

A run saves once per evaluation period; a run killed at any moment (kill -9 included) resumes
from its newest complete and intact checkpoint and, given the same config, ends bit-for-bit
where the uninterrupted run would have. A checkpoint that is incomplete or damaged is skipped
(and set aside) in favour of an older one; one that can never suit this run (another format
version, another config, another device count or state layout) is refused with a one-sentence
`CheckpointError` rather than a library traceback.

On-disk layout of a checkpointer's `directory` (normally `<runs_root>/<run_id>/checkpoints`)::

    <period>/                 one checkpoint; orbax writes it as
                              `<period>.orbax-checkpoint-tmp-<n>/` and renames it once written
      state/                  the payload pytree (orbax StandardSave: OCDBT/zarr array store)
      meta/metadata           JSON: format version, config fingerprint, resolved config, period,
                              steps done, metric, device count, and the path, shape and dtype
                              of every leaf
      _CHECKPOINT_METADATA, … orbax's own bookkeeping
      integrity.json          written last, which makes the checkpoint complete: the size and
                              CRC32 of every other file of `<period>/`, and its own CRC32
    _deleting/                checkpoints dropped by the retention policy, about to be deleted
    _rejected/<period>/       checkpoints a resuming run found incomplete or damaged, kept for
                              inspection where nothing reads them
"""

import dataclasses
import hashlib
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from stoix.utils.checkpoint_integrity import (
    INTEGRITY_FILE,
    CheckpointUnusable,
    SkippedCheckpoint,
    is_complete,
    move_to_trash,
    name_some,
    periods_to_drop,
    purge_trash,
    read_record,
    remove_temporaries,
    set_aside_rejected,
    short_reason,
    step_dirs,
    verify_files,
    write_record,
)
from stoix.utils.distributed import barrier, is_primary

# 2: PPO learner states carry the next observation instead of the whole timestep.
# 3: the integrity record covers every file, is written last and marks a checkpoint complete;
#    the metadata records the device count; orbax no longer keeps per-step metrics.
FORMAT_VERSION: int = 3

_STATE_ITEM = "state"
_META_ITEM = "meta"
# Paths, sinks and checkpoint switches live here: none of them changes the numbers.
_IGNORED_CONFIG_SECTION = "logger"
_IGNORED_ARCH_KEY = "distributed"
_FINGERPRINT_CHARS = 16
# Multi-host barriers need names that never repeat; every process passes the checkpointer's
# barriers in the same order, so a shared count names them alike in every process.
_BARRIER_COUNT = itertools.count()


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
        num_devices: how many devices the learner state was laid out on; None when the
            writer did not say.
    """

    period: int
    steps_done: int
    metric: float
    format_version: int
    fingerprint: str
    num_devices: int | None = None


class RestoreResult(NamedTuple):
    """What `Checkpointer.restore` read, and what it passed over to get there."""

    payload: Any  # the target's structure, leaf types and shardings, with the saved values
    info: CheckpointInfo  # of the checkpoint restored; `info.period` says which
    skipped: Tuple[SkippedCheckpoint, ...]  # newer checkpoints found unusable, newest first


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


def device_count(tree: Any) -> int | None:
    """How many devices the arrays of a pytree are laid out on.

    Args:
        tree: a pytree whose leaves may be jax arrays (sharded or replicated) or host data.

    Returns:
        The largest number of devices any one jax array leaf spans, or None when no leaf is a
        jax array.
    """
    counts = [
        len(leaf.sharding.device_set)
        for leaf in jax.tree.leaves(tree)
        if isinstance(leaf, jax.Array)
    ]
    return max(counts) if counts else None


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


def _read_metadata_or_skip(step_dir: Path) -> Any:
    try:
        return _read_raw_metadata(step_dir)
    except Exception as error:
        raise CheckpointUnusable(f"has unreadable metadata ({short_reason(error)})") from error


def _check_version(version: int, step_dir: Path) -> None:
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {step_dir} has format version {version}, but this code reads version "
            f"{FORMAT_VERSION}; start a new run or use a matching Stoix version."
        )


def _check_format_version(raw: Any, step_dir: Path) -> None:
    # Checked before anything else in the metadata: other fields may mean something else in
    # other versions.
    if not isinstance(raw, dict) or not isinstance(raw.get("format_version"), int):
        raise CheckpointUnusable("has unreadable metadata (no format version)")
    _check_version(raw["format_version"], step_dir)


def _parse_metadata(raw: Dict[str, Any]) -> _Metadata:
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
        leaves = [_LeafSpec(str(p), tuple(int(d) for d in s), str(t)) for p, s, t in raw["leaves"]]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointUnusable(f"has unreadable metadata ({short_reason(error)})") from error
    return _Metadata(info, config, leaves)


def _stored_metric(step_dir: Path) -> float:
    """A checkpoint's rank for "best": its metric, with NaN and unreadable metadata last."""
    try:
        value = float(_read_raw_metadata(step_dir)["metric"])
    except Exception:
        # Unrankable checkpoints are the first to go; resuming never needs them.
        return -math.inf
    return -math.inf if math.isnan(value) else value


def _next_barrier(purpose: str) -> str:
    return f"stoix_checkpoint_{purpose}_{next(_BARRIER_COUNT)}"


# ---------------------------------------------------------------------------------------------
# Checkpointer
# ---------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves and restores the full learner state of one run, keeping the latest and the best.

    Every save is blocking and atomic: when `save` returns the checkpoint is complete on disk,
    and a kill during `save` leaves the earlier checkpoints intact and nothing `restore` would
    pick up. Retention keeps the `keep_latest` most recent checkpoints and the `keep_best`
    highest-metric ones (a checkpoint can be both), and drops others only once the new
    checkpoint is complete.

    In a multi-host run every process calls every method; orbax writes each array shard from
    the process holding it, and process 0 alone writes the integrity record, applies retention
    and moves files, with a barrier after.
    """

    def __init__(
        self,
        directory: Path,
        config: Mapping[str, Any],
        keep_latest: int = 1,
        keep_best: int = 1,
        num_devices: int | None = None,
    ) -> None:
        """Opens the checkpoint directory of a run, without creating it, and removes what an
        interrupted save or delete left in it.

        Args:
            directory: where the run's checkpoints live; created by the first `save`.
            config: the run's resolved config; stored in every checkpoint, compared on restore.
            keep_latest: how many of the most recent checkpoints to keep (at least 1: resuming
                needs the latest).
            keep_best: how many of the highest-metric checkpoints to keep.
            num_devices: how many devices the run lays its learner state out on; recorded in
                every checkpoint, and a checkpoint of another count is refused on restore.
                None records nothing and checks nothing.

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
        self._keep_latest = keep_latest
        self._keep_best = keep_best
        self._num_devices = num_devices
        if is_primary():
            purge_trash(self._directory)
            remove_temporaries(self._directory)
        barrier(_next_barrier("open"))
        self._manager = self._open_manager()

    def _open_manager(self) -> ocp.CheckpointManager:
        """An orbax manager over the step directories now on disk (it caches their list)."""
        options = ocp.CheckpointManagerOptions(
            # No preservation policy and no metrics: orbax keeps every step, and retention is
            # applied here once the new checkpoint's integrity record is written; orbax's own
            # retention would drop older checkpoints before the new one is complete.
            enable_async_checkpointing=False,
            # The constructor removed the leftovers of interrupted saves already.
            cleanup_tmp_directories=False,
            # Only list the step directories: orbax need not read (possibly damaged) files of
            # checkpoints it will never be asked to restore.
            lightweight_initialize=True,
            # Restoring from a mistyped path must not create it.
            create=False,
        )
        try:
            return ocp.CheckpointManager(self._directory, options=options)
        except Exception as error:
            raise CheckpointError(
                f"Cannot read the checkpoints in {self._directory} ({short_reason(error)})."
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
        existing = step_dirs(self._directory)
        if existing and period <= int(existing[0].name):
            raise ValueError(
                f"Cannot save period {period} in {self._directory}: it already holds period "
                f"{existing[0].name}, and periods must increase."
            )
        metadata = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self._fingerprint,
            "period": period,
            "steps_done": int(steps_done),
            "metric": float(metric),
            "num_devices": self._num_devices,
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
            force=True,
        )
        self._manager.wait_until_finished()
        if is_primary():
            write_record(self._directory / str(period), FORMAT_VERSION)
            self._apply_retention()
        barrier(_next_barrier("save"))

    def _apply_retention(self) -> None:
        """Drops the complete checkpoints neither among the latest nor among the best."""
        complete = [d for d in step_dirs(self._directory) if is_complete(d)]
        ranks = {int(d.name): _stored_metric(d) for d in complete}
        for period in periods_to_drop(ranks, self._keep_latest, self._keep_best):
            move_to_trash(self._directory / str(period))
        purge_trash(self._directory)

    def latest_period(self) -> int | None:
        """The most recent complete checkpoint's period (unverified), or None when none is."""
        complete = [d for d in step_dirs(self._directory) if is_complete(d)]
        return int(complete[0].name) if complete else None

    def restore(self, target: Any, period: int | None = None) -> RestoreResult:
        """Reads a checkpoint back into arrays laid out like `target`.

        Without `period` this resumes: it tries the checkpoints newest first, skips those that
        are incomplete or damaged, and reads the newest usable one; the skipped ones are moved
        to `_rejected/` (so later saves and retention never trip over them). A checkpoint that
        cannot suit this run at all (another format version, config, device count or layout)
        stops the search with a `CheckpointError`: older ones of the same run would not suit
        either.

        Args:
            target: a pytree shaped like the saved payload whose leaves (jax arrays, possibly
                sharded, or numpy arrays) give the shapes, dtypes and placement to restore into.
            period: read exactly this checkpoint, skipping nothing and moving nothing.

        Returns:
            The restored payload, what its checkpoint recorded about itself, and the newer
            checkpoints skipped with their reasons.

        Raises:
            CheckpointError: no checkpoint is usable (the reasons are listed), or the one asked
                for is not, or a checkpoint was written by another format version, config or
                device count, or differs from `target` in structure, shape or dtype.
        """
        candidates = step_dirs(self._directory)
        if not candidates:
            raise CheckpointError(f"No checkpoint found in {self._directory}.")
        if period is not None:
            step_dir = self._directory / str(int(period))
            if step_dir not in candidates:
                held = sorted(int(d.name) for d in candidates)
                raise CheckpointError(
                    f"No checkpoint for period {period} in {self._directory}; it holds periods "
                    f"{held}."
                )
            try:
                restored, info = self._read_checked(step_dir, target)
            except CheckpointUnusable as unusable:
                raise CheckpointError(f"Checkpoint {step_dir} {unusable.reason}.") from unusable
            return RestoreResult(restored, info, ())

        rejected: List[Tuple[Path, str]] = []
        for step_dir in candidates:
            try:
                restored, info = self._read_checked(step_dir, target)
            except CheckpointUnusable as unusable:
                rejected.append((step_dir, unusable.reason))
                continue
            return RestoreResult(restored, info, self._set_aside(rejected))
        reasons = [f"checkpoint {step_dir.name} {reason}" for step_dir, reason in rejected]
        raise CheckpointError(
            f"No usable checkpoint in {self._directory}: {name_some(reasons, '; ')}."
        )

    def _set_aside(self, rejected: Sequence[Tuple[Path, str]]) -> Tuple[SkippedCheckpoint, ...]:
        skipped = set_aside_rejected(rejected)
        if skipped:
            # Orbax's manager caches the step list it found when opened, moved folders included.
            self._manager.close()
            self._manager = self._open_manager()
        return skipped

    def _read_checked(self, step_dir: Path, target: Any) -> Tuple[Any, CheckpointInfo]:
        """Checks one checkpoint against its record and this run, then reads its arrays.

        Raises:
            CheckpointUnusable: this checkpoint is incomplete or damaged; an older one may do.
            CheckpointError: no checkpoint of this run can suit the target.
        """
        # CHECK THE FILES (before trusting any byte of them, the version included)
        record = read_record(step_dir)
        if record.format_version is None:
            # A record of format version 2 or older: its metadata says which version it is.
            _check_format_version(_read_metadata_or_skip(step_dir), step_dir)
            raise CheckpointUnusable(f"has a damaged {INTEGRITY_FILE} (no format version)")
        _check_version(record.format_version, step_dir)
        verify_files(step_dir, record)
        raw = _read_metadata_or_skip(step_dir)
        _check_format_version(raw, step_dir)
        metadata = _parse_metadata(raw)

        # CHECK THE CHECKPOINT AGAINST THIS RUN
        if metadata.info.fingerprint != self._fingerprint:
            differences = _config_differences(metadata.config, self._config)
            detail = name_some(differences, "; ") if differences else "fingerprints differ"
            raise CheckpointError(
                f"Checkpoint {step_dir} was written with a different config ({detail}); "
                "resume with the original config or start a new run."
            )
        saved_devices, devices = metadata.info.num_devices, self._num_devices
        if saved_devices is not None and devices is not None and saved_devices != devices:
            raise CheckpointError(
                f"Checkpoint {step_dir} was written on {saved_devices} devices and this run has "
                f"{devices}; resume with the same number of devices "
                f"(XLA_FLAGS=--xla_force_host_platform_device_count={saved_devices} on a CPU)."
            )
        mismatch = _layout_mismatch(metadata.leaves, _leaf_specs(target))
        if mismatch is not None:
            raise CheckpointError(f"Checkpoint {step_dir} does not fit this run: {mismatch}.")

        # READ THE ARRAYS ONTO THE TARGET'S DEVICES
        abstract_target = jax.tree.map(_restore_spec, target)
        try:
            restored = self._manager.restore(
                metadata.info.period,
                args=ocp.args.Composite(**{_STATE_ITEM: ocp.args.StandardRestore(abstract_target)}),
            )[_STATE_ITEM]
            restored = jax.tree.map(_as_target_type, restored, target)
        except Exception as error:
            raise CheckpointUnusable(f"cannot be read ({short_reason(error)})") from error
        # Orbax trusts its stored array metadata; arrays that disagree with ours must not reach
        # the learner.
        same_structure = jax.tree.structure(restored) == jax.tree.structure(target)
        if not same_structure or _leaf_specs(restored) != _leaf_specs(target):
            raise CheckpointUnusable("is corrupt: its arrays do not match its own metadata")
        return restored, metadata.info

    def close(self) -> None:
        """Finishes pending orbax work and releases its resources."""
        self._manager.close()
        if is_primary():
            purge_trash(self._directory)

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def find_resumable_run(runs_root: Path, config: Mapping[str, Any]) -> Path | None:
    """The most recently modified run directory under `runs_root` that this config can resume.

    A run directory qualifies when its `checkpoints/` subfolder holds at least one complete
    checkpoint (one with its integrity record) with this config's fingerprint. A run's
    modification time is the latest of its directory's and its matching checkpoints' (a save
    touches the checkpoint, not the run directory). Unreadable checkpoints don't match;
    `restore` explains them when asked.

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
        for step_dir in step_dirs(run_dir / "checkpoints"):
            if not is_complete(step_dir):
                continue
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
