"""Adapter from MuJoCo Playground's DM Control Suite tasks to the Stoix suite-adapter interface.

Playground's envs share brax's env interface, so `BraxAdapter`'s reset and step serve them.
They have no time limit and no auto-reset of their own (Playground's training wrappers add
both), so `EpisodeEnv` applies the task's `episode_length` as a truncation and resets. A task
terminates only where its `done` flag says so (DM-suite tasks mostly never do).

The physics implementation is a config choice (`impl`): "jax" (MJX in pure JAX) or "warp"
(NVIDIA Warp kernels through an FFI call, Playground's default). Measured on this 2-core CPU,
64 envs: CartpoleBalance steps at ≈186k SPS with "jax" and ≈2.7k with "warp"; CheetahRun at
≈0.2k with "jax" and ≈1.1k with "warp" (compilation 35 s and 93 s with "jax").
"""

from typing import Any

from stoix.wrappers.brax import BraxAdapter


class PlaygroundAdapter(BraxAdapter):
    """One DM-suite task of MuJoCo Playground; actions in [-1, 1]^A.

    Args:
        scenario: the task's registry name, e.g. "CartpoleBalance", "CheetahRun".
        impl: physics implementation, "jax" or "warp".
        **config_overrides: other entries of the task's default config (e.g. action_repeat).
    """

    def __init__(self, scenario: str, impl: str = "jax", **config_overrides: Any):
        # BraxAdapter.__init__ would make a brax env; this adopts a Playground env instead.
        from mujoco_playground import registry

        if scenario not in registry.dm_control_suite.ALL_ENVS:
            raise ValueError(
                f"'{scenario}' is not a MuJoCo Playground DM-suite task; choose one of "
                f"{sorted(registry.dm_control_suite.ALL_ENVS)}"
            )
        if impl not in ("jax", "warp"):
            raise ValueError(f"impl must be 'jax' or 'warp', not '{impl}'")
        overrides = {"impl": impl, **config_overrides}
        config = registry.get_default_config(scenario)
        config.update(overrides)
        env = registry.load(scenario, config_overrides=overrides)
        self._use_env(env, int(config.episode_length))
