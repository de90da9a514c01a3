"""Same command, same seed, same devices → the same numbers, bit for bit.

A restructuring of the code must not change what a run computes. This script runs short seeded
runs of the Anakin systems twice, once from a git revision (checked out into a temporary
worktree) and once from the working tree, and compares, per run,

* the marl-eval JSON (every evaluation episode's return and length, and the absolute metric);
* every training scalar written to TensorBoard (losses, entropies, KLs, training returns), as
  float32 bit patterns. Timing scalars (`timing/*`) are left out: they measure the machine.

    python bench/behaviour_identity.py --against 82bdd6a          # all cases
    python bench/behaviour_identity.py --against HEAD~3 --cases ff_ppo ff_dqn
    python bench/behaviour_identity.py --record before.json       # this tree only
    python bench/behaviour_identity.py --compare before.json      # this tree against a record

Each run is a fresh process on CPU with LLVM optimisation level 1 and the same forced device
count for both sides. Sebulba is not compared: its actor and learner threads interleave
differently from run to run, so its numbers are not reproducible even on one tree (its learning
tests cover it). Prints one line per case and exits 1 if any case differs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
SYSTEMS_DIR = "stoix/systems"


class Case(NamedTuple):
    name: str
    script: str  # relative to the repository root
    overrides: Tuple[str, ...]
    devices: int = 1


# Enough updates that the learner's numbers move (several updates per evaluation) while each run
# stays in the tens of seconds on 2 cores.
SHORT = (
    "arch.total_num_envs=8",
    "arch.num_evaluation=2",
    "arch.num_eval_episodes=4",
    "arch.absolute_metric_episode_multiplier=2",
    "logger.use_console=False",
)
OFF_POLICY = (*SHORT, "arch.total_timesteps=4096", "system.warmup_steps=16")


def _anakin(family: str, name: str, *overrides: str, devices: int = 1) -> Case:
    label = name if devices == 1 else f"{name}@{devices}dev"
    return Case(label, f"{SYSTEMS_DIR}/{family}/anakin/{name}.py", tuple(overrides), devices)


ON_POLICY = (*SHORT, "arch.total_timesteps=4096")
CASES: Tuple[Case, ...] = (
    # The list first.
    _anakin("ppo", "ff_ppo", *ON_POLICY),
    _anakin("ppo", "ff_ppo_continuous", *ON_POLICY),
    _anakin("q_learning", "ff_dqn", *OFF_POLICY),
    _anakin("q_learning", "ff_rainbow", *OFF_POLICY),
    _anakin("q_learning", "ff_pqn", *ON_POLICY),
    _anakin("q_learning", "rec_pqn", *ON_POLICY),
    _anakin("sac", "ff_sac", *OFF_POLICY),
    _anakin("mpo", "ff_mpo", *OFF_POLICY),
    _anakin("vmpo", "ff_vmpo", *ON_POLICY),
    # Every other Anakin system, since the restructuring touches each family's machinery.
    _anakin("ppo", "ff_dpo", *ON_POLICY),
    _anakin("ppo", "ff_dpo_continuous", *ON_POLICY),
    _anakin("policy_gradient", "ff_reinforce", *ON_POLICY),
    _anakin("policy_gradient", "ff_reinforce_continuous", *ON_POLICY),
    _anakin("vmpo", "ff_vmpo_continuous", *ON_POLICY),
    _anakin("q_learning", "ff_ddqn", *OFF_POLICY),
    _anakin("q_learning", "ff_mdqn", *OFF_POLICY),
    _anakin("q_learning", "ff_dqn_reg", *OFF_POLICY),
    _anakin("q_learning", "ff_c51", *OFF_POLICY),
    _anakin("q_learning", "ff_qr_dqn", *OFF_POLICY),
    _anakin("q_learning", "ff_pqn_continuous", *ON_POLICY),
    _anakin("q_learning", "ff_pqn_vdn", *ON_POLICY),
    _anakin("sac", "ff_sac_discrete", *OFF_POLICY),
    _anakin("ddpg", "ff_ddpg", *OFF_POLICY),
    _anakin("ddpg", "ff_td3", *OFF_POLICY),
    _anakin("ddpg", "ff_d4pg", *OFF_POLICY),
    _anakin("mpo", "ff_mpo_continuous", *OFF_POLICY),
    _anakin("awr", "ff_awr", *OFF_POLICY),
    _anakin("awr", "ff_awr_continuous", *OFF_POLICY),
    # Two devices: the gradient all-reduce and the sharded replay buffer.
    _anakin("ppo", "ff_ppo", *ON_POLICY, devices=2),
    _anakin("q_learning", "ff_dqn", *OFF_POLICY, devices=2),
    _anakin("sac", "ff_sac", *OFF_POLICY, devices=2),
)


def _env(tree: Path, devices: int) -> Dict[str, str]:
    env = dict(os.environ)
    # The tree's own `stoix` package comes before the installed (editable) one.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=1"
    )
    return env


def _scalars(run_dir: Path) -> Dict[str, Dict[str, List[List[float]]]]:
    """{seed folder: {tag: [[step, value], ...]}} of every non-timing TensorBoard scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: Dict[str, Dict[str, List[List[float]]]] = {}
    for seed_dir in sorted((run_dir / "tensorboard").glob("seed_*")):
        events = EventAccumulator(str(seed_dir), size_guidance={"scalars": 0})
        events.Reload()
        out[seed_dir.name] = {
            tag: [[e.step, e.value] for e in events.Scalars(tag)]
            for tag in sorted(events.Tags()["scalars"])
            if not tag.startswith("timing/")
        }
    return out


def run_case(tree: Path, case: Case) -> Dict[str, object]:
    """The case's numbers from `tree`, or {"error": ...} when the run failed."""
    with tempfile.TemporaryDirectory(prefix="stoix-identity-") as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                str(tree / case.script),
                *case.overrides,
                f"logger.base_exp_path={tmp}",
            ],
            cwd=tree,
            env=_env(tree, case.devices),
            capture_output=True,
            text=True,
            timeout=900,
        )
        metrics = sorted(Path(tmp).rglob("metrics.json"))
        if proc.returncode != 0 or len(metrics) != 1:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
        return {
            "marl_eval": json.loads(metrics[0].read_text()),
            "scalars": _scalars(metrics[0].parent),
        }


def run_all(tree: Path, cases: Sequence[Case], jobs: int) -> Dict[str, Dict[str, object]]:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda case: run_case(tree, case), cases))
    return {case.name: result for case, result in zip(cases, results, strict=True)}


def _first_difference(before: object, after: object, path: str = "") -> str:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            if key not in before or key not in after:
                return f"{path}/{key} only on one side"
            found = _first_difference(before[key], after[key], f"{path}/{key}")
            if found:
                return found
        return ""
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return f"{path}: {len(before)} vs {len(after)} entries"
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            found = _first_difference(b, a, f"{path}[{i}]")
            if found:
                return found
        return ""
    return "" if before == after else f"{path}: {before!r} → {after!r}"


def compare(before: Dict[str, Dict[str, object]], after: Dict[str, Dict[str, object]]) -> bool:
    identical = True
    for name in after:
        old, new = before.get(name), after[name]
        if old is None:
            line = "not in the record"
            identical = False
        elif "error" in old or "error" in new:
            line = f"FAILED  before: {old.get('error', 'ok')}  after: {new.get('error', 'ok')}"
            identical = False
        else:
            difference = _first_difference(old, new)
            values = sum(
                len(points) for seed in new["scalars"].values() for points in seed.values()
            )
            line = f"DIFFERS {difference}" if difference else f"identical ({values} scalars)"
            identical &= not difference
        print(f"{name:28s} {line}", flush=True)
    return identical


def _worktree(revision: str) -> tempfile.TemporaryDirectory:
    holder = tempfile.TemporaryDirectory(prefix="stoix-identity-tree-")
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", holder.name, revision],
        check=True,
    )
    return holder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    side = parser.add_mutually_exclusive_group(required=True)
    side.add_argument("--against", metavar="REV", help="git revision to compare the tree with")
    side.add_argument("--record", metavar="FILE", type=Path, help="write this tree's numbers")
    side.add_argument("--compare", metavar="FILE", type=Path, help="compare with a record")
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    args = parser.parse_args(argv)

    known = {case.name: case for case in CASES}
    unknown = sorted(set(args.cases or ()) - set(known))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    cases = [known[name] for name in args.cases] if args.cases else list(CASES)

    if args.record:
        args.record.write_text(json.dumps(run_all(REPO, cases, args.jobs), indent=1))
        print(f"recorded {len(cases)} case(s) in {args.record}")
        return 0
    if args.compare:
        before = json.loads(args.compare.read_text())
    else:
        tree = _worktree(args.against)
        try:
            before = run_all(Path(tree.name), cases, args.jobs)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", tree.name], check=False
            )
    return 0 if compare(before, run_all(REPO, cases, args.jobs)) else 1


if __name__ == "__main__":
    sys.exit(main())
