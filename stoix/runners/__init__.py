"""The runners: the loops that train a system, written once for every system.

* `anakin.py` — the Anakin loop (`run_anakin`): environments in JAX, everything within an
  evaluation period one compiled program; its programs and parallel axes in `anakin_program.py`;
* `sebulba.py` — the Sebulba loop (`run_sebulba`): actor threads over host env pools and a
  learner on its own devices; its layout in `sebulba_layout.py`, its thread objects in
  `sebulba_threads.py`;
* `session.py` — what both share: the run directory, opening checkpoints and the logger, the end
  of every period (log, checkpoint), the divergence check;
* `settings.py` — the `arch` and `logger.checkpointing` keys the runners read, typed.

Systems talk to the runners through `stoix.system_api` only.
"""
