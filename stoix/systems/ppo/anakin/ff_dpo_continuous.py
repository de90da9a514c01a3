"""DPO for continuous actions: the discrete system with a Gaussian policy head.

The network config supplies the Gaussian head; actions are clipped to the env's bounds only on
their way to the env, so the stored action's log-probability stays exact.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.ppo.ppo_base import build_dpo, validate_dpo
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(
    name="ff_dpo_continuous", action_kinds=("continuous",), build=build_dpo, validate=validate_dpo
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains continuous-action DPO as configured; returns the last evaluation's mean return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_dpo_continuous")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
