"""A throwaway single-node SLURM cluster on 127.0.0.1 for the tests (Debian's slurm-wlm and
munge; .ci/run installs them): munged with its own key and socket, slurmctld and slurmd with
their own ports, state and logs in a temporary folder, process tracking without cgroups. The
same recipe as docs/gpus-and-clusters.md, "A SLURM cluster on one machine".
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import alive, free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "debug"
NODE = "gonnode"

CONF = """\
ClusterName=gontest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge.sock
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def slurm_binaries() -> bool:
    return all(shutil.which(b) for b in (*DAEMONS, "sbatch", "squeue", "sinfo", "scancel"))


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def slurm_cluster(cpus: int = 4) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd (as root; slurmd must be root to start jobs); yield
    the environment for SLURM's clients (SLURM_CONF); stop all three however the block ends.
    `cpus`: the node's CPUs as SLURM counts them (config_overrides lets it exceed the real
    ones, so that small jobs run side by side)."""
    base = Path(tempfile.mkdtemp(prefix="gon-slurm-"))  # world-searchable: munge's socket
    base.chmod(0o755)
    for d in ("state", "spool"):
        (base / d).mkdir()
    key = base / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    conf = base / "slurm.conf"
    conf.write_text(CONF.format(base=base, user="root", ctld_port=free_port(),
                                slurmd_port=free_port(), node=NODE, cpus=cpus,
                                partition=PARTITION))
    env = {"SLURM_CONF": str(conf)}
    full = os.environ | env

    def start(*argv: str) -> None:
        proc = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{argv[0]} failed:\n{proc.stdout}{proc.stderr}" + \
            "".join(p.read_text() for p in base.glob("*.log"))

    try:
        start("munged", f"--key-file={key}", f"--socket={base}/munge.sock", "--force",
              f"--pid-file={base}/munged.pid", f"--log-file={base}/munged.log",
              f"--seed-file={base}/munged.seed")
        start("slurmctld", "-i")
        start("slurmd", "-N", NODE)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(
                ["sinfo", "--noheader", "--format=%t"], env=full, capture_output=True,
                text=True).stdout:
            assert time.monotonic() < deadline, "the SLURM node did not become idle:\n" + \
                "".join(p.read_text() for p in base.glob("*.log"))
            time.sleep(0.2)
        yield env
    finally:
        subprocess.run(["scancel", "--full", f"--partition={PARTITION}"], env=full,
                       capture_output=True, timeout=60)
        for name in ("slurmd", "slurmctld", "munged"):  # the order they depend on each other
            pid = _pid(base / f"{name}.pid")
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + 30
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)

