"""Double DQN (van Hasselt et al., 2016): DQN whose online network picks the next action and
whose target network values it, which removes most of max-based overestimation."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.dqn_base import QVariant, VariantLoss, make_q_system
from stoix.systems.q_learning.q_types import QBatch, QForward
from stoix.utils.entry import hydra_main


def double_dqn_loss(cfg: DictConfig) -> VariantLoss:
    huber_delta = float(cfg.huber_loss_parameter)

    def loss(forward: QForward, batch: QBatch) -> q_losses.LossAndPriority:
        return q_losses.double_q_learning(
            forward.online_tm1.q_values,
            batch.action,
            batch.reward,
            batch.discount,
            forward.target_t.q_values,
            forward.online_t.q_values,
            huber_delta,
        )

    return loss


SYSTEM = make_q_system(QVariant("ff_ddqn", double_dqn_loss))


def run_experiment(cfg: DictConfig) -> float:
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_ddqn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
