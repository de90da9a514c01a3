"""The checkpointer: saves one run's full learner state atomically and restores it, newest
usable checkpoint first.

Orbax writes the arrays and the metadata of a save into one step directory; the integrity
record written after it makes the checkpoint complete. Restoring checks a checkpoint's files
against its record, then its format version, config fingerprint, device count and payload layout
against this run, before reading any array onto the target's devices. The on-disk layout is in
the package docstring (`stoix.checkpointing`).
"""

import itertools
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import jax
import orbax.checkpoint as ocp

from stoix.checkpointing.fingerprint import config_differences, config_fingerprint, json_ready
from stoix.checkpointing.integrity import (
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
from stoix.checkpointing.metadata import (
    META_ITEM,
    STATE_ITEM,
    CheckpointInfo,
    as_target_type,
    layout_mismatch,
    leaf_specs,
    parse_metadata,
    read_metadata_or_skip,
    restore_spec,
    stored_metric,
)
from stoix.utils.distributed import barrier, is_primary

# 2: PPO learner states carry the next observation instead of the whole timestep.
# 3: the integrity record covers every file, is written last and marks a checkpoint complete;
#    the metadata records the device count; orbax no longer keeps per-step metrics.
FORMAT_VERSION: int = 3

# Multi-host barriers need names that never repeat; every process passes the checkpointer's
# barriers in the same order, so a shared count names them alike in every process.
_BARRIER_COUNT = itertools.count()


class CheckpointError(Exception):
    """One-line, user-facing reason a checkpoint cannot be used."""


class RestoreResult(NamedTuple):
    """What `Checkpointer.restore` read, and what it passed over to get there."""

    payload: Any  # the target's structure, leaf types and shardings, with the saved values
    info: CheckpointInfo  # of the checkpoint restored; `info.period` says which
    skipped: Tuple[SkippedCheckpoint, ...]  # newer checkpoints found unusable, newest first


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
# Format version
# ---------------------------------------------------------------------------------------------


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
        self._config: Dict[str, Any] = json_ready(config)
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
            "leaves": [[s.path, list(s.shape), s.dtype] for s in leaf_specs(payload)],
        }
        self._directory.mkdir(parents=True, exist_ok=True)
        # Arrays and metadata are items of one step directory, renamed into place as a unit, so
        # they always come from the same save.
        self._manager.save(
            period,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardSave(payload),
                    META_ITEM: ocp.args.JsonSave(metadata),
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
        ranks = {int(d.name): stored_metric(d) for d in complete}
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
            _check_format_version(read_metadata_or_skip(step_dir), step_dir)
            raise CheckpointUnusable(f"has a damaged {INTEGRITY_FILE} (no format version)")
        _check_version(record.format_version, step_dir)
        verify_files(step_dir, record)
        raw = read_metadata_or_skip(step_dir)
        _check_format_version(raw, step_dir)
        metadata = parse_metadata(raw)

        # CHECK THE CHECKPOINT AGAINST THIS RUN
        if metadata.info.fingerprint != self._fingerprint:
            differences = config_differences(metadata.config, self._config)
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
        mismatch = layout_mismatch(metadata.leaves, leaf_specs(target))
        if mismatch is not None:
            raise CheckpointError(f"Checkpoint {step_dir} does not fit this run: {mismatch}.")

        # READ THE ARRAYS ONTO THE TARGET'S DEVICES
        abstract_target = jax.tree.map(restore_spec, target)
        try:
            restored = self._manager.restore(
                metadata.info.period,
                args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_target)}),
            )[STATE_ITEM]
            restored = jax.tree.map(as_target_type, restored, target)
        except Exception as error:
            raise CheckpointUnusable(f"cannot be read ({short_reason(error)})") from error
        # Orbax trusts its stored array metadata; arrays that disagree with ours must not reach
        # the learner.
        same_structure = jax.tree.structure(restored) == jax.tree.structure(target)
        if not same_structure or leaf_specs(restored) != leaf_specs(target):
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
