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
from uuid import UUID

import anyio
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_WORKER_ENABLE_CANCELLATION, temporary_settings
from prefect_kubernetes.worker import KubernetesWorker

_WATCHED_STATES = {"SCHEDULED", "PENDING", "CANCELLING"}


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
        await self._forget_started_runs()
        return await super().get_and_submit_flow_runs()

    async def _forget_started_runs(self) -> None:
        """Stop watching runs that started, finished or were deleted (bounds the watch list)."""
        observer = self._cancelling_observer
        watched: list[UUID] = list(observer._registrations) if observer else []
        if not watched:
            return
        runs = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=watched))
        )
        alive = {
            run.id
            for run in runs
            if run.start_time is None and run.state and run.state.type.value in _WATCHED_STATES
        }
        for flow_run_id in set(watched) - alive - self._submitting_flow_run_ids:
            observer.remove_in_flight_flow_run_id(flow_run_id)


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
