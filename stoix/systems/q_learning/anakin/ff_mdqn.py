"""Munchausen DQN (Vieillard et al., 2020): soft Q-learning toward a softmax policy of the
target network, plus a scaled, clipped log-policy bonus for the action taken."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.dqn_base import QVariant, VariantLoss, make_q_system
from stoix.systems.q_learning.q_types import QBatch, QForward
from stoix.utils.entry import hydra_main


def munchausen_loss(cfg: DictConfig) -> VariantLoss:
    temperature = float(cfg.entropy_temperature)
    coefficient = float(cfg.munchausen_coefficient)
    clip = float(cfg.log_policy_clip)
    huber_delta = float(cfg.huber_loss_parameter)

    def loss(forward: QForward, batch: QBatch) -> q_losses.LossAndPriority:
        return q_losses.munchausen_q_learning(
            forward.online_tm1.q_values,
            forward.target_tm1.q_values,
            batch.action,
            batch.reward,
            batch.discount,
            forward.target_t.q_values,
            temperature,
            coefficient,
            clip,
            huber_delta,
        )

    return loss


SYSTEM = make_q_system(QVariant("ff_mdqn", munchausen_loss))


def run_experiment(cfg: DictConfig) -> float:
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_mdqn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
