"""A throwaway single-node Slurm cluster (munged + slurmctld + slurmd) in a temporary folder.

Used by the `slurm` fixture in conftest.py and by benchmarks/bench_slurm.py. Everything it
starts is a child of this process, started in its own session and ended by its own pid:

    with SlurmDaemons(Path(tempfile.mkdtemp())) as slurm:
        os.environ.update(slurm.environment())   # SLURM_CONF, for sbatch/squeue/scancel
        ...                                      # SLURMCluster(queue=slurm.partition, ...)

Nothing is shared with a Slurm or munge the machine may already run: the daemons get their own
munge key and socket, their own ports, state, spool, logs and pid files under `root`. The
controller talks to the node over loopback. Root is not needed: the daemons run as the user who
starts them, and so do the jobs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import psutil

__all__ = ["BINARIES", "SlurmDaemons", "missing_binaries", "squeue_ids", "squeue_states"]

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def missing_binaries() -> list[str]:
    """The programs a Slurm test cluster needs that are not on PATH (nor in /usr/sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in BINARIES if shutil.which(name, path=path) is None]


def _which(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    assert found is not None, f"{name} not found"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def squeue_states(environment: dict[str, str] | None = None) -> dict[str, str]:
    """State (PENDING, RUNNING, COMPLETING, ...) of every job the controller has not finished with."""
    result = subprocess.run(
        ["squeue", "--noheader", "--format=%i %T", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED"],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        timeout=30,
    )
    return dict(line.split() for line in result.stdout.splitlines() if line.strip())


def squeue_ids(environment: dict[str, str] | None = None) -> list[str]:
    """Job ids of every job the controller still knows as pending, running or completing."""
    return list(squeue_states(environment))


class SlurmDaemons:
    """munged, slurmctld and slurmd for one node of `cpus` CPUs (2 by default) and one partition.

    The node has `cpus` CPUs whatever the machine has (slurmd takes the configured figures as they
    are), so the same jobs queue the same way on a laptop and on a 64-core CI runner: with the
    default, two one-core jobs run and a third one waits.

    `start()` returns once `sinfo` reports the node idle; `stop()` ends each daemon by its pid
    (SIGTERM, then SIGKILL after a grace period) together with any job step it left behind.
    """

    def __init__(self, root: Path, *, partition: str = "byop", cpus: int = 2) -> None:
        self.root = Path(root)
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.user = pwd.getpwuid(os.getuid()).pw_name
        # Leave the OS a share of the RAM: slurmd refuses a node configured with more than it has.
        self.memory_mib = int(psutil.virtual_memory().total / 2**20 * 0.8)
        self.conf = self.root / "slurm.conf"
        self.logs = self.root / "log"
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}

    # -- configuration ---------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The variables Slurm's client commands (sbatch, squeue, scancel) need to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        for name in ("munge", "state", "spool", "log", "run"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=byop-test",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    # The daemons run as whoever starts them: root, or any user, who then can run
                    # jobs as themself only (as tested: a plain user's sbatch and srun work).
                    f"SlurmUser={self.user}",
                    f"SlurmdUser={self.user}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "MpiDefault=none",
                    # bind the daemons to the addresses above (loopback) instead of every interface
                    "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "ReturnToService=2",
                    "SlurmdParameters=config_overrides",  # the node's CPUs are `cpus`, not the machine's
                    # scancel/dask's close: SIGTERM, then SIGKILL 2 s later; finished jobs leave squeue fast
                    "KillWait=2",
                    "MinJobAge=2",
                    "SlurmdTimeout=60",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.logs / 'slurmd.log'}",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                    f"RealMemory={self.memory_mib} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    # -- daemons ---------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.logs / f"{name}.out", "ab") as out:
            self._daemons[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment()},
                # its own session: a Ctrl-C in the terminal reaches pytest, which then stops it in order
                start_new_session=True,
            )

    def start(self, *, timeout: float = 60) -> SlurmDaemons:
        """Start the daemons; return once the node is idle. Raises RuntimeError (with the logs) if it is not."""
        self._write_config()
        try:
            munge = self.root / "munge"
            subprocess.run(
                [_which("mungekey"), "--create", "--force", f"--keyfile={munge / 'munge.key'}"],
                check=True,
                capture_output=True,
            )
            self._spawn(
                "munged",
                [
                    _which("munged"),
                    "--foreground",
                    "--force",
                    f"--socket={self.munge_socket}",
                    f"--key-file={munge / 'munge.key'}",
                    f"--pid-file={munge / 'munged.pid'}",
                    f"--log-file={self.logs / 'munged.log'}",
                    f"--seed-file={munge / 'munged.seed'}",
                ],
            )
            self._wait_for(lambda: self.munge_socket.exists(), "munged's socket", timeout)
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf)])
            self._wait_for(self._node_idle, f"node {self.node} idle in sinfo", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        result = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%t"],
            capture_output=True,
            text=True,
            env={**os.environ, **self.environment()},
            timeout=30,
        )
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _wait_for(self, condition, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, process in self._daemons.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode} while waiting for {what}\n{self.tail()}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {timeout} s\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, n: int = 20) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for log in sorted(self.logs.glob("*")):
            lines = log.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def running_pids(self) -> dict[str, int]:
        """The pid of each daemon of ours that is still running."""
        return {name: p.pid for name, p in self._daemons.items() if p.poll() is None}

    def job_processes(self) -> list[psutil.Process]:
        """Live processes of this cluster's jobs: slurmstepd and what it started (dask workers, ...).

        Slurm starts them in sessions of their own, parented to init, not to us. A job's processes
        carry this cluster's SLURM_CONF and a SLURM_JOB_ID in their environment; a slurmstepd
        (whose environment is empty) has a socket in this cluster's spool folder.
        """
        spool = str(self.root / "spool")
        found = []
        for process in psutil.process_iter(["name"]):
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if process.info["name"] == "slurmstepd":
                    sockets = process.net_connections("unix")
                    if any(str(c.laddr).startswith(spool) for c in sockets):
                        found.append(process)
                    continue
                environ = process.environ()
                if environ.get("SLURM_CONF") == str(self.conf) and "SLURM_JOB_ID" in environ:
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def cancel_all_jobs(self, *, timeout: float = 30) -> None:
        """scancel every job of this cluster and wait until squeue shows none."""
        environment = {**os.environ, **self.environment()}
        deadline = time.monotonic() + timeout
        while jobs := squeue_ids(environment):
            subprocess.run(["scancel", *jobs], env=environment, capture_output=True, timeout=30)
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs {jobs} still in squeue {timeout} s after scancel")
            time.sleep(0.2)

    def stop(self, *, grace: float = 10) -> None:
        """Cancel the jobs left, then end slurmd, slurmctld and munged, each by its own pid.

        A job process that outlived its job (it should not) is killed last, so nothing is left.
        """
        if self.running_pids().keys() >= {"munged", "slurmctld", "slurmd"}:
            try:
                self.cancel_all_jobs()
            except (RuntimeError, subprocess.SubprocessError):
                pass  # the sweep below still ends what the jobs left
        for name in ("slurmd", "slurmctld", "munged"):
            process = self._daemons.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=grace)
        leftovers = self.job_processes()
        for process in leftovers:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=grace)

    def __enter__(self) -> SlurmDaemons:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
