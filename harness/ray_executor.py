"""``--executor ray``: the same jobs as Ray tasks on a local Ray instance or a cluster
(``--address``). Each task runs :func:`recipebench.harness.runner.run_job` in a Ray worker that
imports torch and the registries once; results stream back to the parent, which
writes them into the same results database as the local executor does.

Cells are independent, so the matrix scales with the cluster's CPUs. A shared
``--cache-dir`` (e.g. on NFS) lets workers reuse each other's traces; without one,
each node keeps its own cache and results still meet in the database.
"""
from __future__ import annotations

from recipebench.harness.registry import RegistryError
from recipebench.harness.runner import Config, Job, JobResult, _crashed, _run_watched, init_worker

_READY = False


def _run(job: Job, timeout: float, cache_dir: str, plugins: tuple) -> JobResult:
    global _READY
    if not _READY:  # once per Ray worker process
        init_worker(cache_dir, plugins)
        _READY = True
    return _run_watched(0, job, timeout)  # run_job, and not even a BaseException escapes (no watchdog here)


class RayExecutor:
    def __init__(self, config: Config, cache_dir: str):
        try:
            import ray
        except ImportError:
            raise RegistryError("--executor ray needs Ray: pip install 'recipebench[ray]'") from None
        self.ray, self.config, self.cache_dir = ray, config, cache_dir
        if not ray.is_initialized():
            kwargs = {"address": config.address} if config.address else {"num_cpus": config.workers}
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
        self.task = ray.remote(num_cpus=1, max_retries=0)(_run)

    def run(self, jobs: list[Job], on_result, progress) -> None:
        ray = self.ray
        pending = {self.task.remote(j, self.config.timeout, self.cache_dir, self.config.plugins): j for j in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                on_result(ray.get(done[0]))
            except ray.exceptions.RayError as exc:  # worker died or the task raised
                on_result(_crashed(job, f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"))
            progress.update()

    def close(self) -> None:
        if self.config.address is None:
            self.ray.shutdown()
