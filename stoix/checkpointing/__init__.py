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

Modules, each importing only those listed after it:

- `checkpointer`: the `Checkpointer` (save, retention, restore with its checks against this
  run), the format version, `CheckpointError`, `RestoreResult` and `device_count`;
- `fingerprint`: config fingerprints, the config differences a refused checkpoint names, and
  `find_resumable_run`, which finds the run directory a config can resume;
- `metadata`: what `meta/metadata` holds (`CheckpointInfo`, each leaf's path, shape and dtype),
  reading and parsing it, and comparing a restore target's layout with it;
- `integrity`: the integrity record, whether a step directory is complete and intact, setting
  aside rejected checkpoints, and retention's choice and trash folder.
"""

from stoix.checkpointing.checkpointer import (
    FORMAT_VERSION,
    Checkpointer,
    CheckpointError,
    RestoreResult,
    device_count,
)
from stoix.checkpointing.fingerprint import config_fingerprint, find_resumable_run
from stoix.checkpointing.integrity import SkippedCheckpoint
from stoix.checkpointing.metadata import CheckpointInfo

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointInfo",
    "Checkpointer",
    "RestoreResult",
    "SkippedCheckpoint",
    "config_fingerprint",
    "device_count",
    "find_resumable_run",
]
