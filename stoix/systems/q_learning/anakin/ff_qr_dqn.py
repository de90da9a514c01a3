"""QR-DQN (Dabney et al., 2018): N quantiles of the return per action, regressed toward the
next state's quantiles with the quantile Huber loss. The quantile count is in the network
config (`network=mlp_qr_dqn`)."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.dqn_base import QVariant, VariantLoss, make_q_system
from stoix.systems.q_learning.q_types import QBatch, QForward
from stoix.utils.entry import hydra_main


def quantile_loss(cfg: DictConfig) -> VariantLoss:
    huber_delta = float(cfg.huber_loss_parameter)
    double_q = bool(cfg.double_q)

    def loss(forward: QForward, batch: QBatch) -> q_losses.LossAndPriority:
        selector = forward.online_t if double_q else forward.target_t
        return q_losses.quantile_q_learning(
            forward.online_tm1.quantiles,
            batch.action,
            batch.reward,
            batch.discount,
            forward.target_t.quantiles,
            selector.q_values,
            huber_delta,
        )

    return loss


SYSTEM = make_q_system(QVariant("ff_qr_dqn", quantile_loss))


def run_experiment(cfg: DictConfig) -> float:
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_qr_dqn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
