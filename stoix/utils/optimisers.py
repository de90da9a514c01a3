"""The one optimiser factory: global-norm clipping, then Adam or RAdam, optionally decaying.

Every system's optimiser is this chain. Two ways to decay the learning rate linearly to zero:

* a schedule given to Adam as its learning rate (`decay_steps`), the usual form;
* `sweepable=True`: the learning rate sits in the optimiser state (optax.inject_hyperparams,
  the chain's element 1), so the runs of one program can each train with their own
  (`arch.sweep`), and the decay is a separate factor after it.
"""

from typing import Literal

import optax

Algorithm = Literal["adam", "radam"]
_ALGORITHMS = {"adam": optax.adam, "radam": optax.radam}


def clipped_optimiser(
    learning_rate: float,
    max_grad_norm: float,
    algorithm: Algorithm = "adam",
    eps: float | None = None,
    decay_steps: int | None = None,
    sweepable: bool = False,
) -> optax.GradientTransformation:
    """Clip gradients to `max_grad_norm` (global norm), then step with `algorithm`.

    Args:
        eps: the optimiser's epsilon; None keeps optax's default.
        decay_steps: decay the learning rate linearly to 0 over this many steps; None: constant.
        sweepable: keep the learning rate in the optimiser state (see the module docstring).
    """
    make = _ALGORITHMS[algorithm]
    options = {} if eps is None else {"eps": eps}
    if sweepable:
        chain = [
            optax.clip_by_global_norm(max_grad_norm),
            optax.inject_hyperparams(make)(learning_rate=learning_rate, **options),
        ]
        if decay_steps is not None:
            chain.append(optax.scale_by_schedule(optax.linear_schedule(1.0, 0.0, decay_steps)))
        return optax.chain(*chain)
    schedule = (
        learning_rate
        if decay_steps is None
        else optax.linear_schedule(learning_rate, 0.0, decay_steps)
    )
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), make(schedule, **options))
