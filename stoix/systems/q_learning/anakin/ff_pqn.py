"""PQN (Gallici et al., 2025, "Simplifying Deep Temporal Difference Learning") on Anakin.

An online Q-learner: many vectorised envs instead of a replay buffer, a normalised network
(LayerNorm, `network=mlp_pqn`) instead of a target network, and Q(λ) targets computed once per
rollout. All of it is the family's base (`stoix.systems.q_learning.pqn_base`), which the other
PQN members vary: read it top to bottom for the rollout, the targets, the minibatch step and
the update.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.q_learning.pqn_base import PQN, SWEEPABLE, make_build, validate
from stoix.utils.entry import hydra_main

build = make_build(PQN)

SYSTEM = AnakinSystem(
    name="ff_pqn",
    action_kinds=("discrete",),
    build=build,
    validate=validate,
    sweepable=SWEEPABLE,
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PQN as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_pqn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
