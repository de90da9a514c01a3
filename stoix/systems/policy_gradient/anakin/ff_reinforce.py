"""REINFORCE (Williams, 1992) with a learned value baseline, on the Anakin architecture.

PPO's machinery (`ff_ppo.make_build`) with the plain policy-gradient loss: each rollout is used
for one gradient step (one epoch, one minibatch by default), and the advantage is the
discounted return minus the baseline. The return is GAE with λ = 1, i.e. the Monte-Carlo return
within the rollout, bootstrapped from the critic at the rollout's end and through truncations,
never through terminations. The critic is plain squared-error regression on those returns.
"""

from omegaconf import DictConfig

from stoix.systems.policy_gradient.pg_losses import policy_gradient_loss
from stoix.systems.ppo.anakin.ff_ppo import PolicyLoss, make_build, validate_on_policy
from stoix.utils.entry import hydra_main
from stoix.utils.runner import AnakinSystem, run_anakin


def reinforce_policy_loss(sys_cfg: DictConfig) -> PolicyLoss:
    del sys_cfg  # the loss has no hyperparameters of its own
    return policy_gradient_loss


build = make_build(reinforce_policy_loss)
validate = validate_on_policy

SYSTEM = AnakinSystem(
    name="ff_reinforce", action_kinds=("discrete",), build=build, validate=validate
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains REINFORCE as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_reinforce")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
