"""The Kubernetes worker of the GPU and CPU pools: prefect-kubernetes' ``KubernetesWorker`` that
keeps watching a submitted run for cancellation until its pod starts the flow.

Prefect's worker (3.9) cancels runs only with ``PREFECT_WORKER_ENABLE_CANCELLATION`` (off by
default; this module turns it on), and watches a run for ``Cancelling`` only while it submits
it: once the Job is created, a run whose pod then waits for a GPU (``Pending``) is no longer
watched, so cancelling it (from the UI, or the fan-out giving up on an overdue batch) leaves the
Job and its pod behind, and the run ``Cancelling`` for good. This worker registers such runs
again after submission; the worker's own cancellation then deletes the Job (foreground: its pod
first) and marks the run ``Cancelled``. A run whose flow has started is left to its engine,
which stops it itself.

    python -m flows.k8s_worker --pool genai-ingest-gpu [--limit N]
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import anyio
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, BatchV1Api
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_WORKER_ENABLE_CANCELLATION, temporary_settings
from prefect.states import Crashed
from prefect_kubernetes.worker import KubernetesWorker

_WAITING = {StateType.SCHEDULED, StateType.PENDING, StateType.CANCELLING}
_RUN_LABEL = "prefect.io/flow-run-id"
_READ_PAGE = 200  # flow runs per read (the API's default page limit)


class PendingCancelKubernetesWorker(KubernetesWorker):
    """``KubernetesWorker`` (type ``kubernetes``, same pools and templates) that cancels runs
    whose Job waits for a node."""

    @classmethod
    def __dispatch_key__(cls) -> str:  # registered beside, not over, the stock worker
        return "genai-ingest-kubernetes"

    async def _submit_run(self, flow_run: FlowRun) -> None:
        await super()._submit_run(flow_run)
        if self._cancelling_observer is not None:
            self._cancelling_observer.add_in_flight_flow_run_id(flow_run.id)

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        waiting = await self._waiting_runs()
        if waiting:
            await self._crash_runs_whose_job_succeeded(waiting)
        return await super().get_and_submit_flow_runs()

    async def _waiting_runs(self) -> dict[str, FlowRun]:
        """The watched runs whose flow has not started, by flow run id; the others are no
        longer watched (this bounds the watch list)."""
        observer = self._cancelling_observer
        watched: list[UUID] = list(observer._registrations) if observer else []
        runs: list[FlowRun] = []
        for start in range(0, len(watched), _READ_PAGE):
            ids = watched[start : start + _READ_PAGE]
            runs += await self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
            )
        waiting = {
            str(run.id): run
            for run in runs
            if run.start_time is None and run.state and run.state.type in _WAITING
        }
        for flow_run_id in watched:
            if str(flow_run_id) not in waiting and flow_run_id not in self._submitting_flow_run_ids:
                observer.remove_in_flight_flow_run_id(flow_run_id)
        return waiting

    async def _crash_runs_whose_job_succeeded(self, waiting: dict[str, FlowRun]) -> None:
        """A Job that succeeded while its run never started ran nothing that reports (a
        container that exits 0 before the engine, a node that reports a pod done): the run is
        Crashed, so whoever waits on it (the fan-out) redoes the batch instead of waiting on."""
        namespaces = {
            run.infrastructure_pid.split(":")[0]
            for run in waiting.values()
            if run.infrastructure_pid and ":" in run.infrastructure_pid
        }
        async with _kubernetes_client() as api:
            batch = BatchV1Api(api)
            for namespace in namespaces:
                jobs = await batch.list_namespaced_job(
                    namespace, label_selector=_RUN_LABEL, field_selector="status.successful=1"
                )
                for job in jobs.items:
                    run = waiting.get(job.metadata.labels[_RUN_LABEL])
                    if run is None or run.state.type is StateType.CANCELLING:
                        continue
                    await self.client.set_flow_run_state(
                        run.id,
                        Crashed(message=f"Job {job.metadata.name} succeeded, the flow never ran"),
                    )
                    self._logger.warning("flow run %s: Job succeeded, run never started", run.id)


@asynccontextmanager
async def _kubernetes_client() -> AsyncIterator[ApiClient]:
    """In the cluster: its service account; elsewhere the kubeconfig (as the worker does)."""
    try:
        config.load_incluster_config()
        api = ApiClient()
    except config.ConfigException:
        api = await config.new_client_from_config()
    try:
        yield api
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", required=True, help="a Kubernetes work pool")
    parser.add_argument("--limit", type=int, default=None, help="runs submitted at once")
    args = parser.parse_args(argv)

    worker = PendingCancelKubernetesWorker(work_pool_name=args.pool, limit=args.limit)
    with temporary_settings({PREFECT_WORKER_ENABLE_CANCELLATION: True}):  # off by default
        anyio.run(worker.start)


if __name__ == "__main__":
    main()
