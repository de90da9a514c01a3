"""D4PG (Barth-Maron et al., 2018): DDPG's machinery (`stoix/systems/ddpg/ddpg_base.py`) with a
categorical critic over fixed atoms (`system.num_atoms`, `system.v_min`, `system.v_max`) trained
on n-step distributional targets; the actor ascends the critic's mean."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.ddpg.ddpg_base import make_ddpg_system
from stoix.utils.entry import hydra_main

SYSTEM = make_ddpg_system("ff_d4pg", distributional=True)


def run_experiment(cfg: DictConfig) -> float:
    """Trains D4PG as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_d4pg")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
