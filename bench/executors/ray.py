"""``--executor ray``: one Ray task per cell (or per fused group, :mod:`bench.fusion`), with its share of a GPU.

``--ray-address`` (or ``address`` in ``[ray]``) names the cluster: ``host:port`` or ``ray://host:port`` of a
running cluster, ``auto`` for the cluster this machine belongs to; without one, bench starts a Ray instance on
this machine (all its GPUs and cores). Each task asks for ``num_gpus`` GPUs — ``gpus_by_model`` sets a smaller
share for small models, e.g. ``{ "cnn-small" = 0.25 }`` packs four digits cells on one GPU — and Ray places it.

The task writes its result file(s) and also returns their bytes, so the driver gets every result even where the
workers' run folder is not shared with it; resuming a cell on another node needs a shared run folder (its
checkpoint). Ray retries a task whose worker died (``max_retries``); the retry resumes from the checkpoint.
Ray stops the tasks when the driver stops: the next ``bench run`` submits what is left.
"""

from __future__ import annotations

import socket
from typing import Any, ClassVar
from urllib.parse import urlsplit

from bench.results import files
from bench.errors import BenchError
from bench.executors.base import Option, at_least, register_executor
from bench.executors.job import CellJob, GroupJob
from bench.executors.remote import Backend, RemoteExecutor

CONNECT_TIMEOUT_S = 5.0


def run_job(job: CellJob | GroupJob) -> list[bytes]:
    """The Ray task: run the cell (or the fused group), return the bytes of each of its result files."""
    job()
    return [files.result_path(job.settings.run_dir, h).read_bytes() for h in job.cell_hashes]


def check_address(address: str) -> None:
    """One line, at once, when a ``host:port`` address does not answer (Ray itself retries for a minute)."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise BenchError(f"--ray-address {address!r}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise BenchError(f"Ray address {address} does not answer ({exc.strerror or exc}); start the cluster "
                         "(`ray start --head`) or leave --ray-address out to start Ray on this machine") from None


class RayBackend(Backend):
    engine = "ray"

    def __init__(self, ray: Any, options: dict[str, Any], gpus_available: float, started_here: bool) -> None:
        self.ray = ray
        self.options = options
        self.gpus_available = gpus_available
        self.started_here = started_here
        self.task = ray.remote(run_job)
        self.errors: dict[int, str] = {}

    def gpus_for(self, job: CellJob | GroupJob) -> float:
        if not self.gpus_available or job.device == "cpu":
            return 0.0
        return float(self.options["gpus_by_model"].get(job.config["model"], self.options["num_gpus"]))

    def device_type(self, device: str) -> str:
        shares = [self.options["num_gpus"], *self.options["gpus_by_model"].values()]
        return "cuda" if self.gpus_available and device != "cpu" and any(shares) else "cpu"

    def submit(self, jobs: list[CellJob | GroupJob]) -> list[Any]:
        return [self.task.options(num_gpus=self.gpus_for(job), num_cpus=self.options["num_cpus"],
                                  max_retries=self.options["max_retries"]).remote(job) for job in jobs]

    def tag(self, handle: Any) -> str:
        return f"ray:{handle.task_id().hex()}"

    def ended(self, handles: list[Any]) -> list[Any]:
        if not handles:
            return []
        ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        for ref in ready:
            if id(ref) in self.errors:
                continue
            try:
                returned = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a task that raised or whose worker died: the cell's failure
                self.errors[id(ref)] = " ".join(str(exc).split())[-500:]
                continue
            for data in returned:  # one result file per cell of the task
                cell_hash = files.loads(data)[0].cell_hash
                path = files.result_path(self.options["run_dir"], cell_hash)
                if not path.exists():  # the worker's run folder is not this one
                    files.write_atomic(path, data)
        return ready

    def failure(self, handle: Any) -> str:
        return self.errors.get(id(handle), "the task ended without a result")

    def describe(self) -> str:
        where = "a Ray instance started here" if self.started_here else "the Ray cluster"
        gpus = f"{self.gpus_available:g} GPU(s)" if self.gpus_available else "no GPU: cells on CPUs"
        return f"{where} ({gpus})"

    def close(self, interrupted: bool) -> None:
        self.ray.shutdown()


@register_executor("ray")
class RayExecutor(RemoteExecutor):
    """One Ray task per cell (``--ray-address``); fractional GPUs for small cells."""

    table: ClassVar[str] = "ray"
    description: ClassVar[str] = "one Ray task per cell (--ray-address); [ray] in bench.toml"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "address": Option((str,), None, "cluster address (host:port, ray://host:port, auto); --ray-address wins"),
        "num_gpus": Option((int, float), 1, "GPUs per cell (fractions share a GPU)", **at_least(0)),
        "gpus_by_model": Option((dict,), {}, "GPUs per cell by model, e.g. { cnn-small = 0.25 }"),
        "num_cpus": Option((int, float), 1, "CPU cores per cell", **at_least(0)),
        "local_cpus": Option((int,), 0, "cores of a Ray instance started here (0: all)", **at_least(0)),
        "max_retries": Option((int,), 3, "retries of a task whose worker died (each resumes)", **at_least(0)),
        "poll_s": Option((int, float), 2, "seconds between the driver's looks at the tasks", **at_least(0.1)),
    }

    def check(self) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - a dependency of bench
            raise BenchError("the ray executor needs Ray: pip install 'ray>=2.9'") from None
        options = self.ctx.options
        for model, share in options["gpus_by_model"].items():
            if not isinstance(share, (int, float)) or isinstance(share, bool) or share < 0:
                raise BenchError(f"ray.gpus_by_model.{model} = {share!r}: expected a number >= 0")
        address = self.ctx.ray_address or options["address"]
        if address and address != "auto":
            check_address(address)
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if not address and options["local_cpus"]:
            kwargs["num_cpus"] = options["local_cpus"]
        try:
            ray.init(address=address or None, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BenchError(f"Ray cluster {address or '(local)'} cannot be used: {' '.join(str(exc).split())[:300]}") from None
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if self.ctx.device.startswith("cuda") and not gpus:
            ray.shutdown()
            raise BenchError(f"--device {self.ctx.device}: the Ray cluster has no GPU; use --device auto or cpu")
        self._backend = RayBackend(ray, {**options, "run_dir": self.ctx.settings.run_dir}, gpus,
                                   started_here=not address)

    def backend(self) -> Backend:
        self.poll_s = float(self.ctx.options["poll_s"])
        return self._backend
