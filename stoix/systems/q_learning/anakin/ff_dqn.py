"""DQN (Mnih et al., 2015) on the Anakin architecture: Q-learning toward max_a Q_target(s', a).

The replay, the rollout, the gradient step and the update are the family's
(`stoix.systems.q_learning.dqn_base`); this file is DQN's per-sample loss.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.dqn_base import QVariant, VariantLoss, make_q_system
from stoix.systems.q_learning.q_types import QBatch, QForward
from stoix.utils.entry import hydra_main


def dqn_loss(cfg: DictConfig) -> VariantLoss:
    huber_delta = float(cfg.huber_loss_parameter)

    def loss(forward: QForward, batch: QBatch) -> q_losses.LossAndPriority:
        return q_losses.q_learning(
            forward.online_tm1.q_values,
            batch.action,
            batch.reward,
            batch.discount,
            forward.target_t.q_values,
            huber_delta,
        )

    return loss


SYSTEM = make_q_system(QVariant("ff_dqn", dqn_loss))


def run_experiment(cfg: DictConfig) -> float:
    """Trains DQN as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_dqn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
