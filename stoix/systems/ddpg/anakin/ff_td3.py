"""TD3 (Fujimoto et al., 2018): DDPG's machinery with twin critics, target policy smoothing and
a delayed actor, all set in `stoix/configs/system/ddpg/ff_td3.yaml`."""

from omegaconf import DictConfig

from stoix.systems.ddpg.anakin.ff_ddpg import make_ddpg_system
from stoix.utils.entry import hydra_main
from stoix.utils.runner import run_anakin

SYSTEM = make_ddpg_system("ff_td3")


def run_experiment(cfg: DictConfig) -> float:
    """Trains TD3 as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_td3")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
