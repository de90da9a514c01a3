"""TD3 (Fujimoto et al., 2018): DDPG's machinery (`stoix/systems/ddpg/ddpg_base.py`) with twin
critics, target policy smoothing and a delayed actor, all set in
`stoix/configs/system/ddpg/ff_td3.yaml`."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.ddpg.ddpg_base import make_ddpg_system
from stoix.utils.entry import hydra_main

SYSTEM = make_ddpg_system("ff_td3")


def run_experiment(cfg: DictConfig) -> float:
    """Trains TD3 as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_td3")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
