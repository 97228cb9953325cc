"""The SLURM launcher of conf/hydra/launcher/slurm.yaml (a Hydra plugin, found by its module
name: no leading underscore): hydra-submitit-launcher's, except how it waits. Upstream returns
`[job.results()[0] for job in jobs]`, so one cancelled task raises and loses its batch
neighbours' results, and without SLURM accounting (sacct) a cancelled task is waited for
forever. Here each task ends with its JobReturn, or with a FAILED JobReturn holding JobLost
when SLURM no longer lists it and it left no result: the sweeper re-queues that trial and keeps
the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from gon.app.sweeps.slurm import JobLost, queued

log = logging.getLogger(__name__)
POLL_S = 2.0  # how often the sweeper looks for results and asks squeue


class GonSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and job_overrides
        init = {"folder": self.params["submitit_folder"]}  # as upstream from here ...
        specific = {"max_num_timeout", "python"}
        init.update({f"slurm_{k}": v for k, v in self.params.items() if k in specific})
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v
                                      for k, v in self.params.items()
                                      if k not in specific | {"submitit_folder"}})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        params: list[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                           Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*params, strict=True))  # ... to here
        log.info("submitted SLURM job array %s (%d tasks)", jobs[0].job_id.split("_")[0],
                 len(jobs))
        return wait(jobs)


def wait(jobs: list[Any]) -> list[JobReturn]:
    """Each job's JobReturn once it has a result, or a FAILED one holding JobLost once SLURM
    no longer lists it and no result came (checked again after one poll: a shared file system
    may show the result late)."""
    out: dict[int, JobReturn] = {}
    gone: set[int] = set()
    while len(out) < len(jobs):
        try:
            live = queued(j.job_id for i, j in enumerate(jobs) if i not in out)
        except RuntimeError as e:  # the controller is restarting: ask again next time
            log.warning("squeue failed (%s); waiting", e)
            live = {j.job_id for j in jobs}
        for i, job in enumerate(jobs):
            if i in out:
                continue
            if job.paths.result_pickle.exists():
                out[i] = _result(job)
            elif job.job_id not in live:
                if i in gone:
                    out[i] = _lost(job)
                gone.add(i)
        if len(out) < len(jobs):
            time.sleep(POLL_S)
    return [out[i] for i in range(len(jobs))]


def _result(job: Any) -> JobReturn:
    try:
        return job.results()[0]
    except Exception as e:  # the task crashed outside Hydra's run_job
        ret = JobReturn(status=JobStatus.FAILED)
        ret._return_value = e
        return ret


def _lost(job: Any) -> JobReturn:
    log.warning("SLURM task %s ended without a result (cancelled or its node failed)",
                job.job_id)
    ret = JobReturn(status=JobStatus.FAILED)
    ret._return_value = JobLost(f"SLURM task {job.job_id} ended without a result")
    return ret
