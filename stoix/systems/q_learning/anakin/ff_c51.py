"""C51 (Bellemare et al., 2017): a categorical distribution of returns over fixed atoms per
action, trained by cross-entropy to the projected distributional Bellman target.

`system.double_q=True` picks the next action with the online network (as Rainbow does);
the atoms' range comes from the network config (`network=mlp_c51`, `mlp_dueling_c51`).
"""

from omegaconf import DictConfig

from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.anakin.ff_dqn import QVariant, VariantLoss, make_q_system
from stoix.systems.q_learning.q_types import QBatch, QForward
from stoix.utils.entry import hydra_main
from stoix.utils.runner import run_anakin


def categorical_loss(cfg: DictConfig) -> VariantLoss:
    double_q = bool(cfg.double_q)

    def loss(forward: QForward, batch: QBatch) -> q_losses.LossAndPriority:
        selector = forward.online_t if double_q else forward.target_t
        return q_losses.categorical_q_learning(
            forward.online_tm1.logits,
            forward.online_tm1.atoms,
            batch.action,
            batch.reward,
            batch.discount,
            forward.target_t.logits,
            selector.q_values,
        )

    return loss


SYSTEM = make_q_system(QVariant("ff_c51", categorical_loss))


def run_experiment(cfg: DictConfig) -> float:
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_c51")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
