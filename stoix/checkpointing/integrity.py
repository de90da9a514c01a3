"""Whether a checkpoint on disk is complete and intact, and setting aside those that are not.

A checkpoint counts only once complete: its integrity record (`integrity.json`) is the last
file its save writes, and holds the size and CRC32 of every other file of its step directory
(arrays, metadata, orbax's own bookkeeping). A step directory without a record is what a kill
between orbax's commit and the record leaves behind; it is never loaded.

Orbax's array store has no checksums: a flipped bit in array data is restored silently, and a
truncated file fails deep inside its async readers with a flood of tracebacks. Checking every
file against its record first turns both into one short reason.

Checkpoints a resuming run cannot use are moved into `_rejected/` rather than deleted: orbax
no longer sees them (it would trip over them when it lists or ranks its steps), and the user
can still inspect them. Retention's choice and its trash folder live here too: everything that
decides which step directories exist.
"""

import itertools
import json
import os
import shutil
import zlib
from concurrent import futures
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

from stoix.utils.distributed import barrier, is_primary

INTEGRITY_FILE = "integrity.json"
REJECTED_DIR = "_rejected"
# Dropped checkpoints are first renamed here (atomic), then deleted: a kill during the slow
# recursive delete can then never leave a half-deleted `<period>/` that looks like a checkpoint.
TRASH_DIR = "_deleting"
_PARTIAL_RECORD = f"{INTEGRITY_FILE}.partial"
# Orbax writes a save into `<period>.orbax-checkpoint-tmp-<n>/` and renames it once complete.
_TEMPORARY_MARKER = ".orbax-checkpoint-tmp"
_READ_CHUNK_BYTES = 16 * 1024 * 1024
_MAX_NAMED_ITEMS = 3
_MAX_REASON_CHARS = 200
# Barrier names must never repeat; every process sets aside in the same order.
_SET_ASIDE_COUNT = itertools.count()


class CheckpointUnusable(Exception):
    """Why one checkpoint cannot be used, while older ones of the same run still may be.

    Attributes:
        reason: a short predicate for "checkpoint <n> ...", e.g. "is corrupt: meta/metadata
            has been altered".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SkippedCheckpoint(NamedTuple):
    """A checkpoint a resuming run passed over for an older one."""

    period: int
    reason: str  # a predicate for "checkpoint <period> ...", e.g. "is incomplete: ..."
    moved_to: Path  # where it was set aside (`_rejected/<period>`), files intact


class FileSum(NamedTuple):
    """What one file of a checkpoint held when it was saved."""

    size: int  # bytes
    crc32: int


class IntegrityRecord(NamedTuple):
    """The parsed integrity record of one checkpoint."""

    # None for a record written by format version 2 or older: a bare map of file sums, whose
    # checkpoint's own metadata says which version it is.
    format_version: int | None
    files: Dict[str, FileSum]  # path relative to the step directory → its sum


def name_some(items: Sequence[str], separator: str = ", ") -> str:
    """The first few items joined, and how many more there are.

    Args:
        items: what to name.
        separator: what goes between two items.

    Returns:
        e.g. "a, b, c (and 2 more)".
    """
    named = separator.join(items[:_MAX_NAMED_ITEMS])
    hidden = len(items) - _MAX_NAMED_ITEMS
    return f"{named} (and {hidden} more)" if hidden > 0 else named


def short_reason(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message.

    Args:
        error: the exception to describe.

    Returns:
        e.g. "ValueError: bad magic number".
    """
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > _MAX_REASON_CHARS:
        first = first[: _MAX_REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _file_sum(path: Path) -> FileSum:
    size, crc = 0, 0
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_CHUNK_BYTES):
            size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    return FileSum(size, crc)


def _file_sums(step_dir: Path, relative_paths: Sequence[str]) -> Dict[str, FileSum]:
    # zlib releases the GIL on large buffers, so threads checksum several array files at once.
    with futures.ThreadPoolExecutor() as pool:
        sums = list(pool.map(lambda rel: _file_sum(step_dir / rel), relative_paths))
    return dict(zip(relative_paths, sums, strict=True))


def _covered_files(step_dir: Path) -> List[str]:
    """Every file of a step directory except its integrity record (and that record's draft)."""
    return sorted(
        rel
        for rel in (path.relative_to(step_dir).as_posix() for path in step_dir.rglob("*"))
        if rel not in (INTEGRITY_FILE, _PARTIAL_RECORD) and (step_dir / rel).is_file()
    )


def _record_body(format_version: int, files: Dict[str, FileSum]) -> Dict[str, Any]:
    return {
        "format_version": format_version,
        "files": {rel: [file.size, file.crc32] for rel, file in files.items()},
    }


def step_dirs(directory: Path) -> List[Path]:
    """The step directories of a checkpoint directory, complete or not, newest first.

    Args:
        directory: a run's `checkpoints/` folder (it may not exist).

    Returns:
        The `<period>/` folders, by decreasing period.
    """
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if path.name.isdigit() and path.is_dir()]
    return sorted(found, key=lambda path: int(path.name), reverse=True)


def is_complete(step_dir: Path) -> bool:
    """Whether a step directory's save got as far as its integrity record (unverified).

    Args:
        step_dir: one `<period>/` folder.

    Returns:
        True when its integrity record exists.
    """
    return (step_dir / INTEGRITY_FILE).is_file()


def write_record(step_dir: Path, format_version: int) -> None:
    """Records the sums of every file of a saved checkpoint, which makes it complete.

    The record is written to a draft, flushed to disk and renamed into place, so a kill leaves
    either no record or a whole one. It carries its own CRC32, so a damaged record reads as
    damaged rather than as different expectations.

    Args:
        step_dir: the `<period>/` folder orbax has just committed.
        format_version: the checkpoint format the files follow.
    """
    body = _record_body(format_version, _file_sums(step_dir, _covered_files(step_dir)))
    record = {**body, "crc32": zlib.crc32(_canonical_json(body).encode("utf-8"))}
    partial = step_dir / _PARTIAL_RECORD
    with partial.open("w") as stream:
        stream.write(json.dumps(record))
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, step_dir / INTEGRITY_FILE)


def read_record(step_dir: Path) -> IntegrityRecord:
    """Reads a checkpoint's integrity record and checks the record itself.

    Args:
        step_dir: one `<period>/` folder.

    Returns:
        The record; `format_version` is None for a record written before format version 3.

    Raises:
        CheckpointUnusable: there is no record (the checkpoint is incomplete) or it is damaged.
    """
    path = step_dir / INTEGRITY_FILE
    if not path.is_file():
        raise CheckpointUnusable(
            f"is incomplete: it has no {INTEGRITY_FILE} (its save was interrupted)"
        )
    try:
        raw = json.loads(path.read_text())
        if isinstance(raw, dict) and "files" not in raw:
            return IntegrityRecord(format_version=None, files={})
        files = {
            str(rel): FileSum(int(size), int(crc)) for rel, (size, crc) in raw["files"].items()
        }
        format_version = raw["format_version"]
        if not isinstance(format_version, int):
            raise TypeError(f"format version {format_version!r} is not an integer")
        expected_crc = zlib.crc32(
            _canonical_json(_record_body(format_version, files)).encode("utf-8")
        )
        if raw["crc32"] != expected_crc:
            raise ValueError("its own checksum does not match")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointUnusable(
            f"has a damaged {INTEGRITY_FILE} ({short_reason(error)})"
        ) from error
    return IntegrityRecord(format_version, files)


def verify_files(step_dir: Path, record: IntegrityRecord) -> None:
    """Checks that a step directory holds exactly the files of its record, unchanged.

    Args:
        step_dir: one `<period>/` folder.
        record: its integrity record, from `read_record`.

    Raises:
        CheckpointUnusable: a file is missing, unexpected, of another size or altered.
    """
    on_disk = set(_covered_files(step_dir))
    actual = _file_sums(step_dir, sorted(on_disk & record.files.keys()))
    problems = [
        f"{rel} is not in its {INTEGRITY_FILE}" for rel in sorted(on_disk - record.files.keys())
    ]
    for rel, expected in sorted(record.files.items()):
        if rel not in actual:
            problems.append(f"{rel} is missing")
        elif actual[rel].size != expected.size:
            problems.append(f"{rel} has {actual[rel].size} bytes instead of {expected.size}")
        elif actual[rel].crc32 != expected.crc32:
            problems.append(f"{rel} has been altered")
    if problems:
        raise CheckpointUnusable(f"is corrupt: {name_some(problems, '; ')}")


def remove_temporaries(directory: Path) -> List[Path]:
    """Deletes the half-written saves a kill left in a checkpoint directory.

    Args:
        directory: a run's `checkpoints/` folder (it may not exist).

    Returns:
        What was removed.
    """
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        if _TEMPORARY_MARKER not in path.name:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _rejected_destination(step_dir: Path) -> Path:
    # `_rejected/<period>`, suffixed `.<k>` when an earlier resume set aside that period too.
    quarantine = step_dir.parent / REJECTED_DIR
    destination = quarantine / step_dir.name
    suffix = 0
    while destination.exists():
        suffix += 1
        destination = quarantine / f"{step_dir.name}.{suffix}"
    return destination


def set_aside_rejected(rejected: Sequence[Tuple[Path, str]]) -> Tuple[SkippedCheckpoint, ...]:
    """Moves rejected step directories into `_rejected/`, out of orbax's sight, files intact.

    Every process of a run calls this with the same list; process 0 alone moves, between
    barriers, so that no process is still reading a folder when it moves.

    Args:
        rejected: each rejected `<period>/` folder with the reason it was rejected.

    Returns:
        What was set aside, where to, and why, in the order given.
    """
    # Every process names the same destinations, chosen before anything moves.
    skipped = tuple(
        SkippedCheckpoint(int(step_dir.name), reason, _rejected_destination(step_dir))
        for step_dir, reason in rejected
    )
    if not skipped:
        return skipped
    count = next(_SET_ASIDE_COUNT)
    barrier(f"stoix_checkpoint_read_{count}")
    if is_primary():
        for (step_dir, _), entry in zip(rejected, skipped, strict=True):
            entry.moved_to.parent.mkdir(parents=True, exist_ok=True)
            os.rename(step_dir, entry.moved_to)
    barrier(f"stoix_checkpoint_set_aside_{count}")
    return skipped


def periods_to_drop(ranks: Mapping[int, float], keep_latest: int, keep_best: int) -> List[int]:
    """Which checkpoints retention drops: those neither among the latest nor among the best.

    Args:
        ranks: each complete checkpoint's period → its rank for "best" (higher is better).
        keep_latest: how many of the highest periods to keep.
        keep_best: how many of the highest ranks to keep.

    Returns:
        The periods to drop, increasing.
    """
    periods = sorted(ranks)
    keep = set(periods[-keep_latest:]) if keep_latest > 0 else set()
    if keep_best > 0:
        # A stable sort of increasing periods: of equal ranks the newest are kept.
        keep.update(sorted(periods, key=lambda period: ranks[period])[-keep_best:])
    return [period for period in periods if period not in keep]


def move_to_trash(step_dir: Path) -> None:
    """Renames a dropped step directory into `_deleting/`, out of every reader's sight.

    Args:
        step_dir: one `<period>/` folder.
    """
    trash = step_dir.parent / TRASH_DIR / step_dir.name
    if trash.exists():
        shutil.rmtree(trash)
    trash.parent.mkdir(exist_ok=True)
    os.rename(step_dir, trash)


def purge_trash(directory: Path) -> None:
    """Deletes what retention dropped (a delete a kill interrupted is finished next time).

    Args:
        directory: a run's `checkpoints/` folder (it may not exist).
    """
    shutil.rmtree(directory / TRASH_DIR, ignore_errors=True)
