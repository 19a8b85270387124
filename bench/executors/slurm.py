"""``--executor slurm``: one cell (or one fused group, :mod:`bench.fusion`) per Slurm job-array task, via submitit.

submitit (facebookincubator/submitit) writes the sbatch script, pickles the job, tracks it through
squeue/sacct and — what matters for 200-epoch cells — handles time-outs and pre-emption: Slurm signals the job
(USR2, ``signal_delay_s`` before the end), submitit calls the job's ``__submitit_checkpoint__`` and requeues it,
and the requeued task resumes from the cell's last epoch checkpoint. The array's ``%N`` (``array_parallelism``)
caps how many cells run at once; Slurm enforces it, so the cap holds even after the driver stops.

Configuration: a ``[slurm]`` table in bench.toml, overridden key by key by a ``[slurm]`` table in the suite file.
The run folder (``[bench] run_dir``) must be on a filesystem the nodes share: checkpoints, result files and
submitit's logs (``run_dir/_submitit``) live there. The database is only opened by the driver (SQLite), or by
the workers too when it is a server (PostgreSQL).

``--executor submitit-local`` runs the same jobs as local processes through submitit's LocalExecutor — the same
pickling, signals and requeueing without a cluster (a way to try a suite's Slurm path on a workstation);
``array_parallelism`` then caps the processes the driver starts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from bench.errors import BenchError
from bench.executors.base import Option, at_least, register_executor
from bench.executors.job import CellJob, GroupJob
from bench.executors.remote import Backend, RemoteExecutor
from bench.results.claims import pid_alive

# Slurm job states in which a job will still run (or runs) and may write its result.
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"}

# bench.toml key -> submitit AutoExecutor parameter (None: used by bench itself)
SUBMITIT_NAMES = {
    "partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
    "constraint": "slurm_constraint", "time_min": "timeout_min", "gpus_per_node": "gpus_per_node",
    "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "array_parallelism": "slurm_array_parallelism",
    "setup": "slurm_setup", "additional": "slurm_additional_parameters", "signal_delay_s": "slurm_signal_delay_s",
}
LOCAL_NAMES = {"time_min": "timeout_min"}  # the rest (partition, setup, …) is Slurm's


def _submitit():
    try:
        import submitit
    except ImportError:  # pragma: no cover - a dependency of bench
        raise BenchError("the slurm executor needs submitit: pip install submitit") from None
    return submitit


class SubmititBackend(Backend):
    """Jobs through a submitit AutoExecutor (``cluster`` = ``slurm`` or ``local``)."""

    def __init__(self, engine: str, cluster: str, folder: Path, options: dict[str, Any], name: str) -> None:
        submitit = _submitit()
        self.engine, self.cluster, self.folder = engine, cluster, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                              slurm_max_num_timeout=options["max_requeues"])
        names = SUBMITIT_NAMES if cluster == "slurm" else LOCAL_NAMES
        params = {names[k]: v for k, v in options.items() if k in names and v not in (None, [], {})}
        if cluster == "local":
            import torch

            params["gpus_per_node"] = min(options["gpus_per_node"], torch.cuda.device_count())
        self.executor.update_parameters(name=name, **params)
        self.options = options
        self.gpus = params.get("gpus_per_node", options["gpus_per_node"])

    def device_type(self, device: str) -> str:
        return "cuda" if self.gpus and device != "cpu" else "cpu"

    def submit(self, jobs: list[CellJob | GroupJob]) -> list[Any]:
        with self.executor.batch():  # one job array on Slurm
            handles = [self.executor.submit(job) for job in jobs]
        return handles

    def tag(self, handle: Any) -> str:
        return f"{self.engine}:{handle.job_id}"

    def ended(self, handles: list[Any]) -> list[Any]:
        return [h for h in handles if h.done()]

    def failure(self, handle: Any) -> str:
        try:
            exc = handle.exception()
        except Exception as err:  # noqa: BLE001 - submitit raises when the job left no result pickle
            exc = err
        log = ""
        try:
            lines = (handle.stderr() or "").strip().splitlines()
            log = " | ".join(lines[-3:])
        except Exception:  # noqa: BLE001 - no log yet (never started) is not worth a second error
            pass
        state = getattr(handle, "state", "?")
        why = " ".join(str(exc).split())[:300] if exc else "no exception recorded"
        return f"job {handle.job_id} ended ({state}) without a result: {why}" + (f"; log: {log[-300:]}" if log else "")

    def alive(self, tag: str) -> bool:
        engine, _, job_id = tag.partition(":")
        if engine != self.engine or not job_id:
            return False
        if self.cluster == "local":  # the job id is the pid of submitit's local controller
            return job_id.isdigit() and pid_alive(int(job_id))
        state = _submitit().SlurmJob(self.folder, job_id).state
        return state.split()[0].upper() in SLURM_ACTIVE if state else False

    def describe(self) -> str:
        o = self.options
        if self.cluster == "local":
            return f"submitit's local executor (at most {o['array_parallelism']} at once)"
        where = ", ".join(f"{k} {o[k]}" for k in ("partition", "account", "qos") if o.get(k))
        return (f"Slurm ({where + ', ' if where else ''}{o['gpus_per_node']} GPU(s), {o['time_min']} min per job, "
                f"at most {o['array_parallelism']} at once)")


@register_executor("slurm")
class SlurmExecutor(RemoteExecutor):
    """One cell per Slurm job-array task (submitit); time-outs and pre-emption requeue and resume."""

    table: ClassVar[str] = "slurm"
    cluster: ClassVar[str] = "slurm"
    survives_driver: ClassVar[bool] = True
    description: ClassVar[str] = "one cell per Slurm array task through submitit; [slurm] in bench.toml"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "partition": Option((str,), None, "Slurm partition (-p)"),
        "account": Option((str,), None, "account to charge (-A)"),
        "qos": Option((str,), None, "quality of service (--qos)"),
        "constraint": Option((str,), None, "node features (-C), e.g. 'h100'"),
        "time_min": Option((int,), 720, "wall time per job in minutes; a cell that needs longer is requeued "
                                        "and resumes from its checkpoint", **at_least(1)),
        "gpus_per_node": Option((int,), 1, "GPUs per job (one cell per job)", **at_least(0)),
        "cpus_per_task": Option((int,), 8, "CPU cores per job", **at_least(1)),
        "mem_gb": Option((int, float), 32, "memory per job in GB", **at_least(1)),
        "array_parallelism": Option((int,), 32, "at most this many cells run at once (the array's %N)",
                                    **at_least(1)),
        "max_requeues": Option((int,), 10, "time-outs after which a cell is given up (pre-emptions do not count)",
                               **at_least(0)),
        "signal_delay_s": Option((int,), 120, "seconds before the time limit the job is told to requeue",
                                 **at_least(10)),
        "setup": Option((list,), [], "shell lines run before each job (module load, source .venv/bin/activate)"),
        "additional": Option((dict,), {}, "further sbatch options, e.g. { mail-type = 'FAIL' }"),
        "poll_s": Option((int, float), 15, "seconds between the driver's looks at the jobs", **at_least(0.1)),
    }

    def check(self) -> None:
        _submitit()
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if self.cluster == "slurm" and missing:
            raise BenchError(f"--executor slurm needs Slurm's {' and '.join(missing)} on PATH and did not find "
                             "it; run bench on a Slurm login node, or use --executor local")

    def backend(self) -> Backend:
        options = self.ctx.options
        self.poll_s = float(options["poll_s"])
        if self.cluster == "local":
            self.max_in_flight = options["array_parallelism"]
        folder = self.ctx.settings.run_dir / "_submitit"
        return SubmititBackend(self.engine, self.cluster, folder, options, f"bench-{self.ctx.suite_name}")

    @property
    def engine(self) -> str:
        return "slurm" if self.cluster == "slurm" else "submitit-local"


@register_executor("submitit-local")
class SubmititLocalExecutor(SlurmExecutor):
    """The Slurm path without a cluster: each cell a local process under submitit (signals, requeue)."""

    cluster: ClassVar[str] = "local"
    survives_driver: ClassVar[bool] = False
    description: ClassVar[str] = "each cell a local process through submitit's LocalExecutor (reads [slurm])"
