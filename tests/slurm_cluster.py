"""A throwaway one-node SLURM cluster on 127.0.0.1, for testing the launcher's SLURM path.

Needs the slurmctld, slurmd and munged binaries (Debian: `apt-get install slurm-wlm munge`) and
root (slurmd starts job steps as their user). Everything it writes lives in one temporary folder;
`stop()` ends exactly the daemons it started.
"""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "srun", "squeue", "scancel")


class ClusterUnavailable(Exception):
    """The cluster cannot run here; the message says why (a test skips with it)."""


def missing_binaries() -> List[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalSlurmCluster:
    root: Path
    cpus: int = 2
    conf: Path = field(init=False)
    _daemons: List[subprocess.Popen] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.conf = self.root / "slurm.conf"

    @property
    def env(self) -> dict:
        """What a client (sbatch, sinfo, and submitit's calls to them) needs to find the cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 30.0) -> None:
        missing = missing_binaries()
        if missing:
            raise ClusterUnavailable(f"SLURM binaries not found: {', '.join(missing)}")
        if os.geteuid() != 0:
            raise ClusterUnavailable("slurmd must run as root")
        munge_socket = self._start_munge()
        self._write_conf(munge_socket)
        env = {**os.environ, **self.env}
        for command in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "localhost"]):
            name = command[0]
            log = open(self.root / f"{name}.out", "wb")
            self._daemons.append(
                # Own sessions: signals the daemons send to their process group on job ends or
                # shutdown must not reach the pytest worker that started them.
                subprocess.Popen(
                    [*command, "-f", str(self.conf)],
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
        self._wait_for_idle_node(timeout)

    def _start_munge(self) -> Path:
        munge_dir = self.root / "munge"
        munge_dir.mkdir(mode=0o700)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = munge_dir / "munge.socket"
        # --force: munged refuses root and world-writable parents (/tmp) without it.
        command = [
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={socket_path}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ]
        log = open(self.root / "munged.out", "wb")
        self._daemons.append(
            subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        )
        for _ in range(50):
            if socket_path.exists():
                return socket_path
            if self._daemons[-1].poll() is not None:
                break
            time.sleep(0.1)
        raise ClusterUnavailable(f"munged did not start: {self._log_tail('munged.out')}")

    def _write_conf(self, munge_socket: Path) -> None:
        state = self.root / "state"
        spool = self.root / "spool"
        state.mkdir()
        spool.mkdir()
        lines = [
            "ClusterName=stoixtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "ReturnToService=2",
            f"StateSaveLocation={state}",
            f"SlurmdSpoolDir={spool}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'slurmd.log'}",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _wait_for_idle_node(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        env = {**os.environ, **self.env}
        state = ""
        while time.monotonic() < deadline:
            for name, daemon in zip(("munged", "slurmctld", "slurmd"), self._daemons, strict=False):
                if daemon.poll() is not None:
                    raise ClusterUnavailable(
                        f"{name} exited ({daemon.returncode}): {self._log_tail(name + '.log')}"
                        f" {self._log_tail(name + '.out')}"
                    )
            result = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True
            )
            state = (result.stdout or result.stderr).strip()
            if state in ("idle", "mixed"):
                return
            time.sleep(0.5)
        raise ClusterUnavailable(
            f"node not idle after {timeout:.0f}s (sinfo: {state!r}); "
            f"slurmctld: {self._log_tail('slurmctld.log')} slurmd: {self._log_tail('slurmd.log')}"
        )

    def _log_tail(self, name: str, lines: int = 3) -> str:
        path = self.root / name
        if not path.exists():
            path = self.root / "munge" / name
        if not path.exists():
            return "(no log)"
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])

    def _drain(self, timeout: float = 20.0) -> None:
        # A job's result file appears before its step exits; stopping slurmd under a live step
        # would orphan the step's processes, so cancel what is left and wait for the queue.
        env = {**os.environ, **self.env}
        subprocess.run(["scancel", "--user", str(os.geteuid())], env=env, capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
            if queue.returncode != 0 or not queue.stdout.strip():
                return
            time.sleep(0.5)

    def stop(self) -> None:
        if len(self._daemons) == 3 and all(d.poll() is None for d in self._daemons):
            self._drain()
        for daemon in reversed(self._daemons):
            if daemon.poll() is None:
                daemon.terminate()
                try:
                    daemon.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        self._daemons.clear()
