"""Where a run writes: checked before any work, and write failures turned into one line.

A results path that cannot be written (a path under a file, a read-only or virtual filesystem
such as /proc, a full disk) is known before anything compiles; a disk that fills up during a
run is known only when a write fails, and the user then needs to know which checkpoint is the
last good one rather than read a library traceback.
"""

import errno
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from stoix.errors import ConfigError

# Below this much free space a run cannot write even its config and first metrics file.
MIN_FREE_BYTES = 16 * 1024 * 1024
# OS errors that mean "this location cannot take the run's files", not a bug.
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EFBIG,
}
# Libraries that wrap OS errors (orbax through tensorstore, tensorboardX) keep only their text.
_WRITE_ERROR_TEXTS = (
    "no space left on device",
    "disk quota exceeded",
    "read-only file system",
    "permission denied",
    "file too large",
)


class ResultsUnwritable(ConfigError):
    """The results path cannot take the run's files; the message names what is kept."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def check_results_path(base: Path, key: str = "logger.base_exp_path") -> None:
    """Raises `ResultsUnwritable` unless a run could create and fill its folder under `base`.

    Nothing is left behind: the probe is a temporary folder in the nearest existing ancestor,
    removed at once.
    """
    base = Path(os.path.expanduser(str(base))).absolute()
    existing = _nearest_existing(base)
    if not existing.is_dir():
        raise ResultsUnwritable(
            f"{key}={base} cannot be a folder: {existing} is a file, not a folder"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".stoix-write-check-", dir=existing)
        os.rmdir(probe)
    except OSError as err:
        raise ResultsUnwritable(
            f"{key}={base} is not writable ({err.strerror or err} in {existing})"
        ) from None
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ResultsUnwritable(
            f"{key}={base} is on a full disk ({free / 2**20:.1f} MiB free in {existing}); "
            f"a run needs at least {MIN_FREE_BYTES // 2**20} MiB"
        )


def is_write_failure(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) says the filesystem refused a write."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _WRITE_ERRNOS:
            return True
        text = str(current).lower()
        if any(marker in text for marker in _WRITE_ERROR_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def write_failure(
    error: BaseException, run_dir: Path, last_checkpoint: Path | None
) -> ResultsUnwritable:
    """The one-line error for a write that failed during a run."""
    reason = _short_os_reason(error)
    kept = (
        f"the last good checkpoint is {last_checkpoint}"
        if last_checkpoint is not None
        else "no checkpoint was written (logger.checkpointing.save_model=False or none yet)"
    )
    return ResultsUnwritable(f"cannot write the run's files in {run_dir} ({reason}); {kept}")


def _short_os_reason(error: BaseException) -> str:
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        current = current.__cause__ or current.__context__
    for marker in _WRITE_ERROR_TEXTS:
        if marker in str(error).lower():
            return marker.capitalize()
    return type(error).__name__


@contextmanager
def writes_to(run_dir: Path, last_checkpoint: Path | None) -> Iterator[None]:
    """Turns a refused write inside the block into one `ResultsUnwritable` line that names the
    last good checkpoint; other errors pass through unchanged.

    What libraries print to the process's stderr meanwhile is held back and passed on once the
    block ends, unless a write failed: orbax's array store then prints a traceback from each of
    its pending callbacks (hundreds of lines on a full disk), which would bury the one line.
    """
    with _stderr_held_back() as held:
        try:
            yield
        except ResultsUnwritable:
            held.discard = True
            raise
        except Exception as error:
            if is_write_failure(error):
                held.discard = True
                raise write_failure(error, run_dir, last_checkpoint) from None
            raise


class _HeldOutput:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.discard = False


@contextmanager
def _stderr_held_back() -> Iterator[_HeldOutput]:
    """Redirects file descriptor 2 (C++ libraries write there directly) into a pipe drained by a
    thread, and writes what it collected back to stderr at the end unless told to discard it."""
    held = _HeldOutput()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to hold back (a closed descriptor 2)
        yield held
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 16):
            held.chunks.append(chunk)

    reader = threading.Thread(target=drain, name="stderr-held-back", daemon=True)
    reader.start()
    try:
        yield held
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the reader sees its end
        os.close(saved)
        reader.join(timeout=5.0)
        os.close(read_end)
        if not held.discard and held.chunks:
            os.write(2, b"".join(held.chunks))


def runs_root_of(cfg: DictConfig, system_name: str) -> Path:
    """The folder whose subfolders are the run directories of this system on this task."""
    return (
        Path(str(cfg.logger.base_exp_path)) / system_name / f"{cfg.env.suite}_{cfg.env.task_name}"
    )
