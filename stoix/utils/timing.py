"""Counting XLA compilations, so tests and benchmarks can prove a run compiles once."""

import threading

import jax

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts backend compilations and their total seconds since this counter was created."""

    _lock = threading.Lock()
    _count = 0
    _seconds = 0.0
    _installed = False

    def __init__(self) -> None:
        with CompileCounter._lock:
            if not CompileCounter._installed:
                jax.monitoring.register_event_duration_secs_listener(CompileCounter._listen)
                CompileCounter._installed = True
            self._start_count = CompileCounter._count
            self._start_seconds = CompileCounter._seconds

    @staticmethod
    def _listen(event: str, duration: float, **_: object) -> None:
        if event == _BACKEND_COMPILE_EVENT:
            with CompileCounter._lock:
                CompileCounter._count += 1
                CompileCounter._seconds += duration

    @property
    def count(self) -> int:
        return CompileCounter._count - self._start_count

    @property
    def seconds(self) -> float:
        return CompileCounter._seconds - self._start_seconds
