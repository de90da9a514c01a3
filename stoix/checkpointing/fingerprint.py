"""Which config a checkpoint belongs to: config fingerprints, config differences, and finding
the run a config can resume.

A checkpoint records the fingerprint of the config it was written with; a run resumes only from
checkpoints of its own fingerprint. The fingerprint leaves out what cannot change the numbers
(the "logger" section and `arch.distributed`), so a run may be resumed with other paths, sinks,
checkpoint switches or coordinator addresses. When fingerprints differ, the differing keys are
what the user is told.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from stoix.checkpointing.integrity import is_complete, step_dirs
from stoix.checkpointing.metadata import read_raw_metadata

# Paths, sinks and checkpoint switches live here: none of them changes the numbers.
_IGNORED_CONFIG_SECTION = "logger"
_IGNORED_ARCH_KEY = "distributed"
_FINGERPRINT_CHARS = 16


def json_ready(value: Any) -> Any:
    """Converts a config (dicts, DictConfig, lists, numpy scalars) into JSON-ready values."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _numeric_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a config that can change a run's numbers, as plain values."""
    plain = json_ready(config)
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


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
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
                raw = read_raw_metadata(step_dir)
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
