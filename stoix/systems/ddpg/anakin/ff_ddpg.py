"""DDPG (Lillicrap et al., 2016) on Anakin: a deterministic actor exploring with Gaussian noise,
one critic, no target smoothing and no actor delay. Its machinery, shared with TD3 and D4PG, is
`stoix/systems/ddpg/ddpg_base.py`."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.ddpg.ddpg_base import make_ddpg_system
from stoix.utils.entry import hydra_main

SYSTEM = make_ddpg_system("ff_ddpg")


def run_experiment(cfg: DictConfig) -> float:
    """Trains DDPG as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_ddpg")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
