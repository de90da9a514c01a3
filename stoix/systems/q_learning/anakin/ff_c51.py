"""C51 (Bellemare et al., 2017): a categorical distribution of returns over fixed atoms per
action, trained by cross-entropy to the projected distributional Bellman target.

`system.double_q=True` picks the next action with the online network (as Rainbow does);
the atoms' range comes from the network config (`network=mlp_c51`, `mlp_dueling_c51`). The
loss is the family's `categorical_loss`, which Rainbow shares.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.q_learning.dqn_base import QVariant, categorical_loss, make_q_system
from stoix.utils.entry import hydra_main

SYSTEM = make_q_system(QVariant("ff_c51", categorical_loss))


def run_experiment(cfg: DictConfig) -> float:
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_c51")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
