"""REINFORCE (Williams, 1992) with a learned value baseline, on the Anakin architecture.

The on-policy actor-critic base (`stoix.systems.on_policy_base`) with the plain policy-gradient
loss: each rollout is used for one gradient step (one epoch, one minibatch by default), and the
advantage is the discounted return minus the baseline. The return is GAE with λ = 1, i.e. the
Monte-Carlo return within the rollout, bootstrapped from the critic at the rollout's end and
through truncations, never through terminations. The critic is plain squared-error regression
on those returns.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.on_policy_base import validate_on_policy
from stoix.systems.policy_gradient.pg_base import build_reinforce
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(
    name="ff_reinforce",
    action_kinds=("discrete",),
    build=build_reinforce,
    validate=validate_on_policy,
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains REINFORCE as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_reinforce")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
