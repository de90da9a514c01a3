"""Stopping a run cleanly when the machine asks: SIGTERM, SIGUSR1 and SIGUSR2.

SLURM sends SIGTERM at a time limit or on preemption (then SIGKILL after its grace time) and can
send SIGUSR1/SIGUSR2 ahead of the limit (`--signal`; submitit asks for SIGUSR2). A run that
simply died would lose the period in flight and could leave a half-written checkpoint. Instead,
while `stop_on_signals` is active a signal only sets a flag; the runner finishes the period it is
in (a compiled period cannot be interrupted), writes its checkpoint, closes its logs, and raises
`RunStopped`, which the command line turns into one line.

A second signal of the same kind while the first is being honoured gets the default action
(for SIGTERM: the process ends at once), so a user who insists is obeyed.
"""

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

STOP_SIGNALS: Tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class RunStopped(Exception):
    """The run stopped early because a signal asked it to; its state is saved if checkpointing
    is on.

    Attributes:
        signals: the signals received, in order.
        steps_done: env steps (per seed) completed and logged.
        checkpoint: the checkpoint to resume from, or None when checkpointing is off.
    """

    def __init__(
        self, signals: Tuple[signal.Signals, ...], steps_done: int, checkpoint: Path | None
    ):
        self.signals = signals
        self.steps_done = steps_done
        self.checkpoint = checkpoint
        # In a multi-process run a process may stop because another one was signalled.
        names = " and ".join(s.name for s in signals) or "a signal to another process of the run"
        if checkpoint is None:
            saved = (
                "checkpointing is off (logger.checkpointing.save_model=False), so it cannot resume"
            )
        else:
            saved = (
                f"its checkpoint is {checkpoint}; re-run the same command with "
                "logger.checkpointing.load_model=True to continue"
            )
        super().__init__(f"stopped by {names} after {steps_done:,} steps; {saved}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + int(self.signals[0] if self.signals else signal.SIGTERM)


@dataclass
class StopRequest:
    """What signals arrived while a run was listening; read once per period."""

    received: List[signal.Signals] = field(default_factory=list)

    @property
    def requested(self) -> bool:
        return bool(self.received)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turns SIGTERM/SIGUSR1/SIGUSR2 into a `StopRequest` flag for the duration of a run.

    The previous handlers (e.g. submitit's requeue handler) are restored on exit, so a caller
    that catches `RunStopped` can hand the signal on to them (see `forward_signals`). Outside the
    main thread Python cannot install handlers; the run then keeps the process's handlers.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: Dict[signal.Signals, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        received = signal.Signals(signum)
        request.received.append(received)
        # Asked twice: the default action (for SIGTERM, ending the process) from now on.
        signal.signal(received, signal.SIG_DFL)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handle)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def forward_signals(stopped: RunStopped) -> None:
    """Hands each signal that stopped a run to the handler the process had before the run, if
    it is a Python function (e.g. submitit's checkpoint-and-requeue); default and ignore
    dispositions are left alone, since the run already did what they would mean."""
    for sig in stopped.signals:
        if callable(signal.getsignal(sig)):
            signal.raise_signal(sig)
