"""Rainbow (Hessel et al., 2018): C51's distributional loss with double-Q action selection, on
prioritised n-step replay, with a noisy dueling network. Every ingredient is config
(`system=q_learning/ff_rainbow`, `network=mlp_rainbow`), so each can be switched off to ablate
it: `system.prioritised_replay=False`, `system.n_step=1`, `system.double_q=False`,
`network=mlp_dueling_c51` (no noise; then raise `system.epsilon_end`)."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.systems.q_learning.dqn_base import QVariant, categorical_loss, make_q_system
from stoix.utils.entry import hydra_main

SYSTEM = make_q_system(QVariant("ff_rainbow", categorical_loss))


def run_experiment(cfg: DictConfig) -> float:
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_rainbow")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
