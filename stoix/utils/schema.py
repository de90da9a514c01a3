"""One typed schema for every config value, checked before anything is built or compiled.

Every key of every composed config (`arch`, `system`, `network`, `env`, `logger`) has one line
below: its type (int / float / bool / str / choice / nullable / list), its range, as the comment
beside the key in `stoix/configs/` describes it. A key means the same in every system, so
`system` is one flat table. Generic relations between keys (a batch fits in its buffer, the
warm-up covers the n-step window, v_min < v_max, a CNN's per-layer lists agree) follow the
tables. The building blocks are in `stoix.utils.schema_types`.

`validate_config(cfg)` runs first in `make_run_plan` (both runners call it before building an
env) and in the command-line entry; an unknown key, a missing one, a wrong type (an integer key
given 1.5), a value out of range or an impossible relation stops the run with one line naming
the key. A YAML key added without a line here fails `tests/test_schema.py`.

Checked here for networks: each part's `_target_` imports and takes every keyword the part
gives it, and the common keywords have their types. Left to instantiation: whether the network
fits the env (a Q head on continuous actions, a recurrent system given a feed-forward network:
the systems refuse those in one line before compiling). Left to the env factories: the contents
of `env.kwargs` (the suite's own constructor arguments) and whether `env.suite`/`env.scenario`
name an installed suite and one of its tasks. Left to the run plan (`stoix.utils.config`): what
depends on the number of devices or actor threads.
"""

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from stoix.errors import ConfigError
from stoix.utils.schema_types import (
    AnyOf,
    Bool,
    Choice,
    Float,
    FreeForm,
    Int,
    ListOf,
    Nullable,
    Schema,
    Section,
    Spec,
    Str,
    Target,
    check_config,
)

# jax.random.PRNGKey takes any int64 but, without jax_enable_x64, keeps only the low 32 bits
# (seed 2**32 + s gives seed s's key) and overflows past int64; envpool asserts int32 seeds.
# Runs add offsets to the seed (+ i per run, + 1_000_003 for evaluation, + 7919 per actor,
# + 100_003 per env pool), so seeds stop at 2**30 - 1, leaving 2**30 of room below int32's limit.
MAX_SEED = 2**30 - 1

POSITIVE = Float(0.0, low_open=True)
NON_NEGATIVE = Float(0.0)
FRACTION = Float(0.0, 1.0)  # probabilities, discounts, λs, Polyak rates, schedule fractions
LEARNING_RATE = NON_NEGATIVE  # 0 freezes a network (an ablation), never an error
COUNT = Int(1)

# ARCH: devices, envs, budget, evaluation, seeds (configs/arch/*.yaml).
ARCH_COMMON: dict[str, Spec] = {
    "architecture_name": Choice(("anakin", "sebulba")),
    "seed": Int(0, MAX_SEED),
    "total_num_envs": COUNT,
    "total_timesteps": Nullable(COUNT),  # null: the budget is arch.num_updates
    "num_updates": Nullable(COUNT),
    "num_evaluation": COUNT,
    "num_eval_episodes": COUNT,
    "num_seeds": COUNT,
    "update_batch_size": COUNT,
    "evaluation_greedy": Bool(),
    "eval_max_steps": Nullable(COUNT),  # null: the env's own episode limit + 1
    "absolute_metric": Bool(),
    "absolute_metric_episode_multiplier": COUNT,
    "report_compiles": Bool(),
}
ARCH_ANAKIN: dict[str, Spec] = {
    **ARCH_COMMON,
    "sweep.key": Nullable(Str()),  # which system key is a sweep's: the run plan checks it
    "sweep.values": ListOf(Float()),
    "distributed.enabled": Bool(),
    "distributed.coordinator_address": Nullable(Str()),  # host:port, checked when joining
    "distributed.num_processes": Nullable(COUNT),
    "distributed.process_id": Nullable(Int(0)),
    "distributed.local_device_ids": Nullable(ListOf(Int(0))),
    "distributed.initialization_timeout_s": COUNT,
}
DEVICE_IDS = Nullable(AnyOf((Int(0), ListOf(Int(0), min_length=1))))
ARCH_SEBULBA: dict[str, Spec] = {
    **ARCH_COMMON,
    "actor.device_ids": DEVICE_IDS,
    "actor.actor_per_device": COUNT,
    "learner.device_ids": DEVICE_IDS,
    "evaluator_device_id": Nullable(Int(0)),
    "pipeline_capacity": COUNT,
    "thread_timeout_s": POSITIVE,
    "transfer_guard": Choice(("allow", "log", "disallow")),
}

# SYSTEM: algorithm hyperparameters of every system (configs/system/<family>/*.yaml).
SYSTEM: dict[str, Spec] = {
    "system_name": Str(),
    # Data per update.
    "rollout_length": COUNT,
    "epochs": COUNT,
    "num_minibatches": COUNT,
    "gradient_steps_per_update": COUNT,
    "batch_size": COUNT,
    "sequence_length": COUNT,
    "buffer_size": COUNT,
    "warmup_steps": Int(0),
    "n_step": COUNT,
    # Returns and targets.
    "gamma": FRACTION,
    "gae_lambda": FRACTION,
    "td_lambda": FRACTION,
    "q_lambda": FRACTION,
    "vtrace_lambda": FRACTION,
    "reward_scale": POSITIVE,
    "clip_rho_threshold": POSITIVE,
    "clip_pg_rho_threshold": POSITIVE,
    "huber_loss_parameter": NON_NEGATIVE,  # 0: squared error
    "double_q": Bool(),
    "num_atoms": Int(2),
    "v_min": Float(),
    "v_max": Float(),
    # Losses.
    "clip_epsilon": NON_NEGATIVE,
    "value_clip_epsilon": Nullable(NON_NEGATIVE),  # null: plain regression
    "entropy_coefficient": NON_NEGATIVE,
    "value_coefficient": NON_NEGATIVE,
    "regularisation_coefficient": NON_NEGATIVE,
    "standardise_advantages": Bool(),
    "alpha": POSITIVE,  # DPO's drift scale for positive advantages
    "beta": POSITIVE,  # AWR's temperature; DPO's drift scale for negative advantages
    "max_weight": POSITIVE,
    "entropy_temperature": POSITIVE,
    "munchausen_coefficient": NON_NEGATIVE,
    "log_policy_clip": Float(high=0.0),  # a log-probability's lower clip
    # Optimisers.
    "actor_lr": LEARNING_RATE,
    "critic_lr": LEARNING_RATE,
    "q_lr": LEARNING_RATE,
    "alpha_lr": LEARNING_RATE,
    "dual_lr": LEARNING_RATE,
    "adam_eps": POSITIVE,
    "max_grad_norm": POSITIVE,  # a clip at 0 (or below) would zero every gradient
    "decay_learning_rate": Bool(),
    "decay_learning_rates": Bool(),
    "optimiser": Choice(("adam", "radam")),
    "normalise_observations": Bool(),
    # Target networks.
    "tau": FRACTION,  # 0: hard copies every target_update_period
    "target_update_period": COUNT,
    # Exploration.
    "epsilon_start": FRACTION,
    "epsilon_end": FRACTION,
    "epsilon_decay_fraction": FRACTION,
    "evaluation_epsilon": FRACTION,
    "exploration_noise": NON_NEGATIVE,
    "exploration_noise_start": NON_NEGATIVE,
    "exploration_noise_end": NON_NEGATIVE,
    "exploration_noise_decay_fraction": FRACTION,
    # Prioritised replay.
    "prioritised_replay": Bool(),
    "priority_exponent": NON_NEGATIVE,
    "importance_sampling_exponent": FRACTION,
    "priority_floor": POSITIVE,  # keeps every transition sampleable
    # Deterministic actors (DDPG family).
    "num_critics": COUNT,
    "policy_delay": COUNT,
    "target_noise": NON_NEGATIVE,
    "target_noise_clip": NON_NEGATIVE,
    # SAC.
    "init_alpha": POSITIVE,  # also V-MPO's initial KL multiplier
    "autotune_alpha": Bool(),
    "target_entropy_scale": Float(),
    # MPO and V-MPO: KL bounds are positive, duals start anywhere in log space.
    "epsilon": POSITIVE,
    "epsilon_policy": POSITIVE,
    "epsilon_mean": POSITIVE,
    "epsilon_stddev": POSITIVE,
    "epsilon_temperature": POSITIVE,
    "epsilon_alpha": POSITIVE,
    "epsilon_alpha_mean": POSITIVE,
    "epsilon_alpha_std": POSITIVE,
    "init_log_temperature": Float(),
    "init_log_alpha": Float(),
    "init_temperature": POSITIVE,
    "num_samples": COUNT,
    "top_k_fraction": Float(0.0, 1.0, low_open=True),
}

# NETWORK: <network>.<part>.<keyword> (configs/network/*.yaml). A part is built by
# hydra.utils.instantiate from its `_target_` and keywords; sizes from the env are added then.
NETWORKS = ("actor_network", "critic_network", "q_network")
# Keep in step with stoix.networks.layers.ACTIVATIONS (tests/test_schema.py compares them).
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu", "sigmoid")
SIZES = ListOf(COUNT)
TORSO: dict[str, Spec] = {
    "_target_": Target(),
    "layer_sizes": SIZES,
    "activation": Choice(ACTIVATIONS),
    "use_layer_norm": Bool(),
    "use_batch_norm": Bool(),
    "noisy": Bool(),
    "normalise_input": Bool(),
    "kernel_scale": POSITIVE,
    "observation_ndim": COUNT,
    "channel_sizes": SIZES,
    "kernel_sizes": SIZES,
    "strides": SIZES,
    "hidden_sizes": SIZES,
}
HEAD: dict[str, Spec] = {
    "_target_": Target(),
    "init_log_std": Float(),
    "min_scale": POSITIVE,
    "num_atoms": Int(2),
    "num_quantiles": COUNT,
    "v_min": Float(),
    "v_max": Float(),
    "dueling": Bool(),
    "noisy": Bool(),
}
CORE: dict[str, Spec] = {
    "_target_": Target(),
    "cell": Choice(("gru", "lstm")),
    "hidden_size": COUNT,
}
PARTS: dict[str, dict[str, Spec]] = {
    "pre_torso": TORSO,
    "post_torso": TORSO,
    "core": CORE,
    "action_head": HEAD,
    "critic_head": HEAD,
    "q_head": HEAD,
}
NETWORK: dict[str, Spec] = {
    f"{net}.{part}.{name}": spec
    for net in NETWORKS
    for part, keywords in PARTS.items()
    for name, spec in keywords.items()
}

# ENV: one task of one suite (configs/env/<suite>/*.yaml).
ENV: dict[str, Spec] = {
    "suite": Str(),  # the env factories refuse a suite they do not know
    "scenario": Str(),
    "task_name": Str(),
    "kwargs": FreeForm(),  # the suite's constructor arguments, passed on as they are
    "max_episode_steps": Nullable(COUNT),  # null: the suite's own limit
    "eval_metric": Str(),
}

# LOGGER: outputs and trackers (configs/logger/*.yaml).
LOGGER: dict[str, Spec] = {
    "base_exp_path": Str(),
    "use_console": Bool(),
    "use_json": Bool(),
    "use_tb": Bool(),
    "colour": Bool(),
    "checkpointing.save_model": Bool(),
    "checkpointing.load_model": Bool(),
    "checkpointing.load_path": Nullable(Str()),
    "checkpointing.keep_latest": COUNT,  # resuming needs the latest
    "checkpointing.keep_best": Int(0),
    "neptune.use": Bool(),
    "neptune.project": Nullable(Str()),
    "neptune.mode": Choice(("async", "sync", "offline", "debug")),
    "neptune.tags": ListOf(Str()),
    "wandb.use": Bool(),
    "wandb.project": Nullable(Str()),
    "wandb.entity": Nullable(Str()),
    "wandb.mode": Choice(("online", "offline", "disabled")),
    "wandb.group": Nullable(Str()),
    "wandb.tags": ListOf(Str()),
}


# RELATIONS: each applies where its keys exist; values already have their types.


def _value(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def batch_fits_in_buffer(cfg: DictConfig) -> None:
    """A replay batch (of sequences, where it samples sequences) fits in the replay buffer."""
    batch, buffer = _value(cfg, "system.batch_size"), _value(cfg, "system.buffer_size")
    if batch is None or buffer is None:
        return
    length = _value(cfg, "system.sequence_length")
    steps = int(batch) * int(length or 1)
    if steps > int(buffer):
        what = f"system.batch_size={batch}" + (
            f" × system.sequence_length={length} = {steps:,} steps" if length else ""
        )
        raise ConfigError(
            f"{what} is larger than system.buffer_size={buffer}: a batch must fit in the "
            "replay buffer"
        )


def warmup_covers_first_sample(cfg: DictConfig) -> None:
    """The warm-up stores enough steps per env for the first sampled n-step window or sequence."""
    warmup = _value(cfg, "system.warmup_steps")
    if warmup is None:
        return
    for key in ("n_step", "sequence_length"):
        needed = _value(cfg, f"system.{key}")
        if needed is not None and int(warmup) < int(needed):
            raise ConfigError(
                f"system.warmup_steps={warmup} must be at least system.{key}={needed}, so the "
                "first batch can be sampled"
            )


def _below(cfg: DictConfig, node: str) -> None:
    low, high = _value(cfg, f"{node}.v_min"), _value(cfg, f"{node}.v_max")
    if low is not None and high is not None and float(low) >= float(high):
        raise ConfigError(f"{node}.v_min={low} must be below {node}.v_max={high}")


def supports_are_ordered(cfg: DictConfig) -> None:
    """Every categorical support (system's or a head's) runs from v_min up to a larger v_max."""
    _below(cfg, "system")
    for net in NETWORKS:
        for part in ("q_head", "critic_head", "action_head"):
            _below(cfg, f"network.{net}.{part}")


def torsos_are_consistent(cfg: DictConfig) -> None:
    """A torso normalises one way, and a CNN gives each convolution a size, kernel and stride
    (the torsos would otherwise fail at compile time, with a traceback)."""
    for net in NETWORKS:
        for part in ("pre_torso", "post_torso"):
            node = f"network.{net}.{part}"
            if _value(cfg, f"{node}.use_layer_norm") and _value(cfg, f"{node}.use_batch_norm"):
                raise ConfigError(
                    f"{node}.use_layer_norm and {node}.use_batch_norm are both True; choose one"
                )
            lists = {k: _value(cfg, f"{node}.{k}") for k in ("channel_sizes", "kernel_sizes")}
            lists["strides"] = _value(cfg, f"{node}.strides")
            lengths = {k: len(v) for k, v in lists.items() if v is not None}
            if len(set(lengths.values())) > 1:
                shown = ", ".join(f"{node}.{k} has {n}" for k, n in lengths.items())
                raise ConfigError(f"one entry per convolution is needed, but {shown}")


RELATIONS = (
    batch_fits_in_buffer,
    warmup_covers_first_sample,
    supports_are_ordered,
    torsos_are_consistent,
)


def _schema(arch: Mapping[str, Spec]) -> Schema:
    return Schema(
        sections={
            "arch": Section(arch, required=True),
            "system": Section(SYSTEM, required=False),
            "network": Section(NETWORK, required=False),
            "env": Section(ENV, required=True),
            "logger": Section(LOGGER, required=True),
        },
        relations=RELATIONS,
    )


SCHEMAS = {"anakin": _schema(ARCH_ANAKIN), "sebulba": _schema(ARCH_SEBULBA)}


def schema_for(architecture_name: str) -> Schema:
    """The schema of an architecture's configs (an unknown name is refused by its own spec)."""
    return SCHEMAS.get(architecture_name, SCHEMAS["anakin"])


def validate_config(cfg: DictConfig) -> None:
    """Checks every value of a composed config before anything is built.

    Raises:
        ConfigError: one line naming the first key that is unknown, missing, of the wrong type,
            out of range, or in an impossible relation with another key.
    """
    architecture = OmegaConf.select(cfg, "arch.architecture_name", default=None)
    # The name picks the arch table, so it is checked before any key is looked up there.
    if architecture is not None:
        ARCH_COMMON["architecture_name"].check("arch.architecture_name", architecture)
    check_config(cfg, schema_for(str(architecture)))
