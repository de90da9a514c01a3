"""DQN-Reg (Co-Reyes et al., 2021, "Evolving Reinforcement Learning Algorithms"): DQN's squared
TD error plus a small linear penalty on the chosen action's value, which keeps Q from drifting
upward. `system.regularisation_coefficient` sets the penalty."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.dqn_base import QVariant, VariantLoss, make_q_system
from stoix.systems.q_learning.q_types import QBatch, QForward
from stoix.utils.entry import hydra_main


def regularised_dqn_loss(cfg: DictConfig) -> VariantLoss:
    coefficient = float(cfg.regularisation_coefficient)

    def loss(forward: QForward, batch: QBatch) -> q_losses.LossAndPriority:
        return q_losses.regularised_q_learning(
            forward.online_tm1.q_values,
            batch.action,
            batch.reward,
            batch.discount,
            forward.target_t.q_values,
            coefficient,
        )

    return loss


SYSTEM = make_q_system(QVariant("ff_dqn_reg", regularised_dqn_loss))


def run_experiment(cfg: DictConfig) -> float:
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_dqn_reg")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
