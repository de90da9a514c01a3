"""Throughput of Stoix's ff_ppo on gymnax CartPole-v1 against its two "speeds of light".

For each env count this measures, each in a fresh subprocess on ONE CPU device:

* Stoix training: `run_anakin_measured` on ff_ppo, env steps / seconds inside the compiled
  learn calls (compilation and evaluation excluded), compile seconds, XLA compilation count;
* acting only: a jitted `lax.scan` of vmapped `EpisodeEnv(GymnaxAdapter("CartPole-v1"))` steps
  with the actor's forward pass and sampling, no learning (bench of the env + policy);
* the minimal hand-fused PPO (`bench/minimal_ppo.py`) at the same settings: training SPS.

It also checks that the number of compilations does not grow with `arch.num_evaluation`.

    python bench/throughput.py [--envs 4 128 1024] [--steps N] [--out docs/benchmarks.md]
"""

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Dict, List, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULT_TAG = "BENCH_RESULT "
ROLLOUT_LENGTH = 32  # one rollout length for every size, so only the env count varies
NUM_MINIBATCHES = 4
# Default per-size step budgets: ~10-40 s of Stoix training each on the 2-core reference
# machine (see docs/benchmarks.md); sizes not listed get DEFAULT_STEPS.
STEPS_BY_ENVS = {4: 1_500_000, 128: 3_000_000, 1024: 4_000_000}
DEFAULT_STEPS = 2_000_000
# Updates per run are rounded to a multiple of this, so 4 and 8 evaluations (and the minimal
# PPO, which has no periods) all run exactly the same number of updates.
UPDATE_MULTIPLE = 8


def round_steps(steps: int, num_envs: int) -> int:
    per_update = num_envs * ROLLOUT_LENGTH
    updates = max(UPDATE_MULTIPLE, steps // per_update // UPDATE_MULTIPLE * UPDATE_MULTIPLE)
    return updates * per_update


# WORKERS: each runs in its own process (see `spawn`) and prints one tagged JSON line.


def _check_one_device() -> None:
    import jax

    if len(jax.devices()) != 1:
        raise SystemExit(f"expected 1 device, jax sees {len(jax.devices())}: unset XLA_FLAGS")


def worker_stoix(num_envs: int, steps: int, num_evaluation: int, seed: int) -> Dict[str, Any]:
    from stoix.runners.anakin import run_anakin_measured
    from stoix.systems.ppo.anakin.ff_ppo import SYSTEM
    from stoix.utils.entry import compose_config

    _check_one_device()
    # Results go to a temporary folder: a benchmark writes nothing into the repository.
    with tempfile.TemporaryDirectory(prefix="stoix-bench-") as tmp:
        cfg = compose_config(
            "ff_ppo",
            [
                "env=gymnax/cartpole",
                f"arch.seed={seed}",
                f"arch.total_num_envs={num_envs}",
                f"arch.total_timesteps={steps}",
                f"arch.num_evaluation={num_evaluation}",
                "arch.num_eval_episodes=4",
                "arch.absolute_metric=False",
                f"system.rollout_length={ROLLOUT_LENGTH}",
                f"system.num_minibatches={NUM_MINIBATCHES}",
                "logger.use_console=False",
                "logger.use_json=False",
                "logger.use_tb=False",
                f"logger.base_exp_path={tmp}",
            ],
        )
        result = run_anakin_measured(cfg, SYSTEM)
    return {
        "sps": result.env_steps / result.learn_seconds,
        "compile_seconds": result.compile_seconds,
        "compilations": result.compilations,
        "learn_seconds": result.learn_seconds,
        "env_steps": result.env_steps,
        "final_return": result.final_return,
    }


def worker_rollout(num_envs: int, steps: int, seed: int) -> Dict[str, Any]:
    """Acting alone: the env and the actor's forward + sample, structured like the rollouts of
    training (an outer scan over updates of a `ROLLOUT_LENGTH` scan that stores rewards)."""
    import jax

    from stoix.networks.base import make_actor
    from stoix.utils.entry import compose_config
    from stoix.wrappers.episode import EpisodeEnv
    from stoix.wrappers.gymnax import GymnaxAdapter

    _check_one_device()
    env = EpisodeEnv(GymnaxAdapter("CartPole-v1"))
    actor = make_actor(compose_config("ff_ppo", ["network=mlp"]).network, env.spec)
    num_periods = steps // (num_envs * ROLLOUT_LENGTH)
    key, env_key, params_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
    params = actor.init(params_key, jax.tree.map(lambda x: x[0], timestep.observation))

    def act_and_step(carry, _):
        env_state, timestep, key = carry
        key, act_key = jax.random.split(key)
        action = actor.apply(params, timestep.observation).sample(seed=act_key)
        env_state, timestep = jax.vmap(env.step)(env_state, action)
        return (env_state, timestep, key), timestep.reward

    def period(carry, _):
        carry, rewards = jax.lax.scan(act_and_step, carry, None, length=ROLLOUT_LENGTH)
        return carry, rewards.sum()

    def run(params, env_state, timestep, key):
        del params  # closed over above; kept as an argument so the signature mirrors learn
        carry, sums = jax.lax.scan(period, (env_state, timestep, key), None, length=num_periods)
        return carry, sums.sum()

    # Only the env state is donated: a fresh timestep's observation and next_observation are
    # one buffer, which XLA refuses to donate twice.
    run_jit = jax.jit(run, donate_argnums=1)
    start = time.perf_counter()
    compiled = run_jit.lower(params, env_state, timestep, key).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _, total_reward = jax.block_until_ready(compiled(params, env_state, timestep, key))
    seconds = time.perf_counter() - start
    env_steps = num_periods * ROLLOUT_LENGTH * num_envs
    assert float(total_reward) == env_steps  # CartPole pays 1 per step: every step ran
    return {"sps": env_steps / seconds, "compile_seconds": compile_seconds, "env_steps": env_steps}


def worker_minimal(num_envs: int, steps: int, seed: int) -> Dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import minimal_ppo

    _check_one_device()
    return minimal_ppo.run(num_envs, ROLLOUT_LENGTH, NUM_MINIBATCHES, steps, seed)


WORKERS = {"stoix": worker_stoix, "rollout": worker_rollout, "minimal": worker_minimal}


# ORCHESTRATION


def _one_device_env() -> Dict[str, str]:
    """The caller's environment without the forced device count: one CPU device per run."""
    env = dict(os.environ)
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _busy_cpu_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def spawn(kind: str, **kwargs: Any) -> Dict[str, Any]:
    """Runs one worker in a fresh interpreter, so compile counts and caches start from zero.

    Also measures how busy the rest of the machine was meanwhile: the CPU time every process
    spent minus this worker's own, per wall-clock second ("others' cores"), since the figures
    are only as good as the machine was quiet.
    """
    cmd = [sys.executable, __file__, "--worker", kind, "--worker-args", json.dumps(kwargs)]
    busy, own = _busy_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=_one_device_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_cpu = (own_after.ru_utime - own.ru_utime) + (own_after.ru_stime - own.ru_stime)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"benchmark worker {kind} {kwargs} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    result["others_cores"] = max(0.0, (_busy_cpu_seconds() - busy - own_cpu) / wall)
    result["own_cores"] = own_cpu / wall
    return result


def best_of(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The fastest of repeated runs: on a shared machine noise only ever slows a run down."""
    best = dict(max(runs, key=lambda r: r["sps"]))
    best["others_cores"] = max(r["others_cores"] for r in runs)
    return best


def machine_description() -> Dict[str, str]:
    import jax

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def fmt_int(x: float) -> str:
    return f"{x:,.0f}" if math.isfinite(x) else "–"


def render(
    rows: List[Dict[str, Any]],
    check: Dict[str, Any] | None,
    machine: Dict[str, str],
    command: str,
    repeats: int,
) -> str:
    lines = [
        "| envs | env steps | Stoix train SPS | compile s | compilations | rollout SPS "
        "| Stoix / rollout | minimal SPS | minimal compile s | Stoix / minimal "
        "| return Stoix (eval) / minimal (train) | others' cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        s, ro, m = r["stoix"], r["rollout"], r["minimal"]
        lines.append(
            f"| {r['envs']} | {fmt_int(s['env_steps'])} | {fmt_int(s['sps'])} "
            f"| {s['compile_seconds']:.1f} | {s['compilations']} | {fmt_int(ro['sps'])} "
            f"| {s['sps'] / ro['sps']:.2f} | {fmt_int(m['sps'])} | {m['compile_seconds']:.1f} "
            f"| **{s['sps'] / m['sps']:.2f}** "
            f"| {s['final_return']:.0f} / {m['final_train_return']:.0f} "
            f"| {max(s['others_cores'], ro['others_cores'], m['others_cores']):.2f} |"
        )
    text = "\n".join(lines) + "\n"
    if check is not None:
        same = "same" if check["counts"][0] == check["counts"][1] else "DIFFERENT"
        text += (
            f"\nCompilations with arch.num_evaluation={check['evaluations'][0]} vs "
            f"{check['evaluations'][1]} ({check['envs']} envs, {check['steps']:,} steps): "
            f"{check['counts'][0]} vs {check['counts'][1]} ({same}).\n"
        )
    text += (
        f"\nMachine: {machine['cpu']}, {machine['cores']} cores; jax {machine['jax']} (CPU, one "
        f"device), Python {machine['python']}; {machine['date']}. Best of {repeats} run(s) per "
        f"cell.\nCommand: `{command}`\n"
    )
    return text


BEGIN_MARK = "<!-- throughput table: generated by bench/throughput.py --out -->"
END_MARK = "<!-- end of generated throughput table -->"


def write_doc(path: Path, table: str) -> None:
    """Writes the table between the markers, keeping the hand-written text around them."""
    block = f"{BEGIN_MARK}\n{table}{END_MARK}\n"
    text = path.read_text() if path.exists() else ""
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = (
            "# Benchmarks\n\n"
            "## Throughput: ff_ppo on gymnax CartPole-v1\n\n"
            f"One seed on one CPU device; rollout length {ROLLOUT_LENGTH}, 4 epochs × "
            f"{NUM_MINIBATCHES} minibatches, 64-64 tanh actor and critic. SPS = env steps per "
            "second of training, compilation excluded. Columns: `bench/README.md`.\n\n" + block
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ff_ppo throughput vs its speeds of light")
    parser.add_argument("--envs", type=int, nargs="+", default=[4, 128, 1024])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="env steps per run for every size (default: a per-size budget)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check-envs",
        type=int,
        default=128,
        help="env count of the compilations-vs-num_evaluation check (0: skip)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the table here (markdown)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = WORKERS[args.worker](**json.loads(args.worker_args))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return

    rows = []
    for n in args.envs:
        steps = round_steps(args.steps or STEPS_BY_ENVS.get(n, DEFAULT_STEPS), n)
        print(f"[{n} envs, {steps:,} steps]", flush=True)
        runs: Dict[str, List[Dict[str, Any]]] = {"stoix": [], "minimal": [], "rollout": []}
        # Repeats interleave the three kinds, so a busy spell hits them alike.
        for _ in range(args.repeats):
            runs["stoix"].append(
                spawn("stoix", num_envs=n, steps=steps, num_evaluation=4, seed=args.seed)
            )
            runs["minimal"].append(spawn("minimal", num_envs=n, steps=steps, seed=args.seed))
            runs["rollout"].append(spawn("rollout", num_envs=n, steps=steps, seed=args.seed))
        row: Dict[str, Any] = {"envs": n, **{kind: best_of(r) for kind, r in runs.items()}}
        for kind in ("stoix", "minimal", "rollout"):
            print(
                f"  {kind:8s} {row[kind]['sps']:>12,.0f} SPS  "
                f"compile {row[kind]['compile_seconds']:.1f}s  "
                f"others' cores {row[kind]['others_cores']:.2f}",
                flush=True,
            )
        rows.append(row)

    check = None
    if args.check_envs:
        # A short budget is enough: the count depends on the programs, not on their length.
        steps = round_steps(16 * args.check_envs * ROLLOUT_LENGTH, args.check_envs)
        counts = [
            spawn("stoix", num_envs=args.check_envs, steps=steps, num_evaluation=k, seed=args.seed)[
                "compilations"
            ]
            for k in (4, 8)
        ]
        check = {"envs": args.check_envs, "steps": steps, "evaluations": (4, 8), "counts": counts}

    command = "python bench/throughput.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    table = render(rows, check, machine_description(), command.strip(), args.repeats)
    print("\n" + table)
    if args.out is not None:
        write_doc(args.out, table)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
