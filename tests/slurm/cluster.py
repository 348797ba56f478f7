"""A real single-machine SLURM cluster for the tests: two emulated nodes on 127.0.0.1.

Debian's slurmctld/slurmd/munge (``.ci/run`` installs them). Multiple-slurmd mode gives two
``NodeName``s on one host with their own ports, so a 2-node job really runs two slurmd and two
node ranks. Everything lives under a temporary folder and ``SLURM_CONF``; the daemons are
stopped (jobs first) at the end.

Root is not needed: the cluster runs as whoever runs the tests. It starts its own munged with its
own key and socket (munged refuses a socket whose folders are not searchable by all, so the socket
gets a folder of its own under /tmp), and ``SlurmUser``/``SlurmdUser`` are the current user, who
is then the only user whose jobs it can run: the tests'.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REQUIRED = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")  #: job states


def _sbin(name: str) -> str:
    """Where ``name`` is: on PATH, else in /usr/sbin (Debian's daemons, off a plain user's PATH)."""
    return shutil.which(name) or f"/usr/sbin/{name}"


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    missing = [name for name in REQUIRED if not Path(_sbin(name)).exists()]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs it with apt-get)"
    return None


class Cluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` is what clients need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.user = getpass.getuser()
        # munged checks that every folder above its socket is searchable by all (pytest's are 0700)
        self.socket_dir = Path(tempfile.mkdtemp(prefix="harness-munge-"))
        self.socket_dir.chmod(0o755)
        self.socket = self.socket_dir / "munge.socket"
        self.pids: list[Path] = []
        self.started: list[int] = []  # every daemon this cluster started

    def write_conf(self) -> None:
        for sub in ("state", "spool/n1", "spool/n2", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 2
        memory = 4000
        self.conf.write_text(f"""
ClusterName=harness
SlurmctldHost=localhost
SlurmctldPort=16817
SlurmUser={self.user}
SlurmdUser={self.user}
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=60
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool/%n
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd-%n.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd-%n.log
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001 CPUs={cpus} RealMemory={memory}
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17002 CPUs={cpus} RealMemory={memory}
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")

    def start(self) -> None:
        self.write_conf()
        self.start_munge()
        subprocess.run([_sbin("slurmctld"), "-f", str(self.conf)], check=True, env=self.env)
        for node in ("n1", "n2"):
            subprocess.run([_sbin("slurmd"), "-f", str(self.conf), "-N", node], check=True, env=self.env)
        self.pids = [self.root / "slurmctld.pid", self.root / "slurmd-n1.pid", self.root / "slurmd-n2.pid"]
        deadline = time.time() + 10
        while not all(path.is_file() for path in self.pids) and time.time() < deadline:
            time.sleep(0.1)
        self.started += [int(path.read_text().strip()) for path in self.pids if path.is_file()]
        deadline = time.time() + 60
        while time.time() < deadline:
            states = self.run("sinfo", "-h", "-N", "-o", "%N %t").stdout.split("\n")
            if sum("idle" in line for line in states) == 2:
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM nodes did not become idle: {states}\n{self.logs()}")

    def start_munge(self) -> None:
        """This cluster's own munged: a fresh key readable by its owner only, its own socket."""
        folder = self.root / "munge"
        folder.mkdir(mode=0o700, exist_ok=True)
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        pid_file = folder / "munged.pid"
        subprocess.run([_sbin("munged"), f"--key-file={key}", f"--socket={self.socket}", f"--pid-file={pid_file}",
                        f"--log-file={self.root / 'log' / 'munged.log'}", f"--seed-file={folder / 'munged.seed'}"],
                       check=True)  # fmt: skip
        deadline = time.time() + 10
        while not pid_file.is_file() and time.time() < deadline:
            time.sleep(0.1)
        self.started.append(int(pid_file.read_text().strip()))

    def run(self, *command: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, check=check)

    def submit(self, *arguments: str, env: dict[str, str] | None = None) -> int:
        done = subprocess.run(["sbatch", "--parsable", *arguments], env={**self.env, **(env or {})},
                              capture_output=True, text=True, check=True)  # fmt: skip
        return int(done.stdout.strip().split(";")[0])

    def state(self, job: int) -> str:
        """The job's state as slurmctld sees it (PENDING, RUNNING, COMPLETED, FAILED...)."""
        text = self.run("scontrol", "show", "job", str(job)).stdout
        for field in text.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return "UNKNOWN"

    def array_states(self, job: int) -> dict[str, str]:
        """The state of each task of an array job, by ``<job>_<task>`` (one entry, the whole
        array, while none of its tasks has started)."""
        text = self.run("scontrol", "show", "job", str(job)).stdout
        states = {}
        for record in text.split("\n\n"):
            fields = dict(field.split("=", 1) for field in record.split() if "=" in field)
            if "JobState" in fields:
                states[f"{fields.get('ArrayJobId', job)}_{fields.get('ArrayTaskId', '')}"] = fields["JobState"]
        return states

    def wait_array(self, job: int, tasks: int, timeout: float = 300) -> dict[str, str]:
        """Until every one of the ``tasks`` tasks of an array job ended; returns their states."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            states = self.array_states(job)
            if len(states) == tasks and all(state in FINAL for state in states.values()):
                return states
            time.sleep(0.5)
        raise TimeoutError(f"array job {job} not done after {timeout} s: {self.array_states(job)}\n{self.logs()}")

    def wait(self, job: int, timeout: float = 300, kick_requeued: bool = True) -> str:
        """Until the job ends; returns its final state. A requeued job is started after 2 s
        instead of SLURM's ~120 s hold. Not at once: slurmd revokes the old run's credential with
        a time stamp in whole seconds, so a restart allocated within the same second is refused
        ("Job credential revoked") and the job ends FAILED."""
        deadline = time.time() + timeout
        pending_since = None
        while time.time() < deadline:
            state = self.state(job)
            if state in FINAL:
                return state
            pending_since = (pending_since or time.time()) if state == "PENDING" else None
            if pending_since is not None and time.time() - pending_since >= 2 and kick_requeued:
                self.run("scontrol", "update", f"JobId={job}", "StartTime=now")
            time.sleep(0.5)
        raise TimeoutError(f"job {job} still {self.state(job)} after {timeout} s\n{self.logs()}")

    def logs(self) -> str:
        text = []
        for path in sorted((self.root / "log").glob("*.log")):
            text.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="ignore").splitlines()[-30:]))
        return "\n".join(text)

    def running(self) -> list[int]:
        """The daemons this cluster started that still run."""
        alive = []
        for pid in self.started:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            except (FileNotFoundError, IndexError):
                continue
            if state != "Z":
                alive.append(pid)
        return alive

    def stop(self, timeout: float = 15) -> None:
        """Cancel the jobs and stop every daemon this cluster started (slurmd, slurmctld, then
        munged), waiting until they are gone."""
        self.run("scancel", f"--user={self.user}")
        time.sleep(1)
        for pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + timeout
        while self.running() and time.time() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
