"""The triage app's replays and actions: replay here and now (against the local Prefect
server, like the CLI) or via a deployment, and the outcome of an action for the UI. Used by
``notebooks/dlq_triage.py``; the views live in ``genai_ingest.triage``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genai_ingest.config import Settings
from genai_ingest.failures.dlq import DeadLetter
from genai_ingest.failures.redact import redact
from genai_ingest.triage.entries import entries_by_id, source_name

DEFAULT_DEPLOYMENT = "dlq-replay"


def replay_in_process(
    settings: Settings,
    entry_ids: Sequence[str],
    password: str | None = None,
    skip_language_check: bool = False,
) -> dict[str, Any]:
    """Run the ``dlq_replay`` flow here and now; returns its report (``replayed``,
    ``resolved``, counters). Entries that are not open are left alone. Like the CLI, it runs
    against the configured Prefect API, else the local server (started on first use), never
    a temporary one."""
    from pydantic import SecretStr

    from flows.dlq_replay import dlq_replay
    from genai_ingest.run.local_server import prefect_api

    with prefect_api(settings.policies.local_server, notify=_to_stderr):
        return dlq_replay(
            entry_ids=list(entry_ids),
            settings=settings,
            password=SecretStr(password) if password else None,
            skip_language_check=skip_language_check,
        )


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def replay_message(report: Mapping[str, Any], entries: Iterable[DeadLetter]) -> str:
    """One line for the UI: what was replayed and which entries are resolved now."""
    if not report["replayed"]:
        return "Nothing to replay: the selected entries are not open."
    resolved = [source_name(e.source) for e in entries_by_id(entries, report["resolved"])]
    failed = report["replayed"] - len(resolved)
    text = f"Replayed {report['replayed']}: {len(resolved)} resolved"
    text += f" ({', '.join(resolved)})" if resolved else ""
    return text + (f", {failed} still failing" if failed else "")


@dataclass(frozen=True)
class DeploymentRun:
    flow_run_id: str
    url: str
    state: str


def replay_via_deployment(
    entry_ids: Sequence[str],
    deployment: str = DEFAULT_DEPLOYMENT,
    password_secret_block: str | None = None,
    skip_language_check: bool = False,
) -> DeploymentRun:
    """Start a run of the ``dlq_replay/<deployment>`` deployment without waiting for it.
    The password travels as the name of a Prefect Secret block, never as a value."""
    from prefect.deployments import run_deployment

    parameters: dict[str, Any] = {
        "entry_ids": list(entry_ids),
        "skip_language_check": skip_language_check,
    }
    if password_secret_block:
        parameters["password_secret_block"] = password_secret_block
    flow_run = run_deployment(
        name=f"dlq_replay/{deployment}", parameters=parameters, timeout=0, _sync=True
    )
    state = flow_run.state.name if flow_run.state else "Pending"
    return DeploymentRun(str(flow_run.id), flow_run_url(str(flow_run.id)), state)


def flow_run_url(flow_run_id: str) -> str:
    """The flow run's page in the Prefect UI."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    base = PREFECT_UI_URL.value() or str(PREFECT_API_URL.value() or "").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def deployment_run_state(flow_run_id: str) -> str:
    """The current state name of a flow run (Scheduled, Running, Completed, Failed, ...)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.name if state else "Pending"


@dataclass(frozen=True)
class ActionOutcome:
    """What an action did, for the UI: a message, the entries acted on, a deployment run."""

    ok: bool
    message: str
    entry_ids: tuple[str, ...] = ()
    run: DeploymentRun | None = None


def run_action(
    entry_ids: Sequence[str], action: Callable[[], str | DeploymentRun]
) -> ActionOutcome:
    """Run an action on the selected entries; errors become a (redacted) message."""
    if not entry_ids:
        return ActionOutcome(False, "Select one or more entries in the table first.")
    ids = tuple(entry_ids)
    try:
        result = action()
    except Exception as exc:
        return ActionOutcome(False, f"{type(exc).__name__}: {redact(str(exc))}", ids)
    if isinstance(result, DeploymentRun):
        return ActionOutcome(True, f"Started flow run {result.flow_run_id}", ids, result)
    return ActionOutcome(True, result, ids)
