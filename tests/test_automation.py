"""The alerting automations in ``deploy/automations/dlq-alert.yaml``: valid for Prefect's own
``AutomationCore`` model (no server), importable with ``prefect automation create --from-file``,
and (end to end, slow) a real ingest run with a failing document emits
``genai-ingest.run.dead-lettered`` and the automation delivers a notification to a webhook."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from flows.reporting import DLQ_EVENT, FAILED_EVENT
from tests.conftest import REPO, SAMPLES

AUTOMATIONS = REPO / "deploy" / "automations" / "dlq-alert.yaml"
PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
PREFECT = str(Path(sys.executable).parent / "prefect")


def load() -> list[dict[str, Any]]:
    return yaml.safe_load(AUTOMATIONS.read_text())["automations"]


def test_the_file_validates_with_prefects_automation_model() -> None:
    raw = load()
    automations = [AutomationCore.model_validate(a) for a in raw]
    by_event = {}
    for data, automation in zip(raw, automations, strict=True):
        # AutomationCore ignores unknown keys: a typo would silently drop a setting
        assert set(data) <= set(AutomationCore.model_fields), data.keys()
        assert set(data["trigger"]) <= set(EventTrigger.model_fields)
        trigger = automation.trigger
        assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Reactive
        assert trigger.threshold == 1
        assert trigger.match.model_dump() == {"prefect.resource.id": "genai-ingest.flow-run.*"}
        [action] = automation.actions
        assert isinstance(action, SendNotification), "an unknown action type"
        assert set(data["actions"][0]) <= set(SendNotification.model_fields)
        assert str(action.block_document_id) == PLACEHOLDER
        (event,) = trigger.expect
        by_event[event] = action
    assert set(by_event) == {DLQ_EVENT, FAILED_EVENT}

    event = {
        "resource": {"id": "genai-ingest.flow-run.1234", "name": "gentle-otter"},
        "payload": {
            "dlq_new": 2,
            "by_error_class": {"store_unavailable": 2},
            "data_dir": "/data",
            "state": "FAILED",
            "message": "boom",
        },
    }
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for action in by_event.values():
        for template in (action.subject, action.body):
            assert "{{" in template
            env.from_string(template).render(event=event)  # every variable exists
    body = env.from_string(by_event[DLQ_EVENT].body).render(event=event)
    assert "dlq replay --all --data-dir /data" in body and "store_unavailable" in body


# --- against the session's Prefect server -----------------------------------------------------


class Hook(ThreadingHTTPServer):
    """A loopback webhook receiver recording the JSON bodies posted to it."""

    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def imported(prefect_server: str, hook: Hook, tmp_path: Path) -> Iterator[str]:
    """The automations imported with the documented CLI command, the placeholder replaced by
    a webhook notification block posting to ``hook``; deleted afterwards."""
    import os

    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    block = CustomWebhookNotificationBlock(
        name="genai-ingest-alerts",
        url=hook.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    )
    block_id = str(block.save("genai-ingest-alerts-test", overwrite=True))
    path = tmp_path / "dlq-alert.yaml"
    path.write_text(AUTOMATIONS.read_text().replace(PLACEHOLDER, block_id))
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    created = subprocess.run(
        [PREFECT, "automation", "create", "--from-file", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    with get_client(sync_client=True) as client:
        try:
            yield block_id
        finally:
            for data in load():
                for automation in client.read_automations_by_name(data["name"]):
                    client.delete_automation(automation.id)


@pytest.mark.slow
def test_imported_automations_read_back_and_a_dead_lettering_run_notifies(
    imported: str, hook: Hook, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from flows.ingest import ingest
    from genai_ingest.config import Settings

    with get_client(sync_client=True) as client:
        for data in load():
            [stored] = client.read_automations_by_name(data["name"])
            assert stored.enabled and stored.trigger.expect == set(data["trigger"]["expect"])
            [action] = stored.actions
            assert isinstance(action, SendNotification)
            assert str(action.block_document_id) == imported

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("docling_wiki.md", "unstructured_password.pdf"):
        shutil.copyfile(SAMPLES / name, docs / name)
    settings = Settings(data_dir=tmp_path / "state")
    report = ingest(sources=[str(docs)], settings=settings)
    assert report["dlq_new"] == 1 and report["documents_indexed"] == 1

    data_dir = str(settings.data_dir)
    events: list[Any] = []
    notified: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and not (events and notified):
            page = client.read_events(  # the server's page limit is 50 (the client's 100)
                EventFilter(event=EventNameFilter(name=[DLQ_EVENT])), limit=50
            )
            events = [e for e in page.events if e.payload.get("data_dir") == data_dir]
            notified = [b for b in hook.bodies if data_dir in b.get("body", "")]
            time.sleep(1)
    assert events, "no genai-ingest.run.dead-lettered event for this run"
    [event] = events
    assert event.payload["dlq_new"] == 1
    assert event.payload["by_error_class"] == {"password_required": 1}
    assert event.resource.id.startswith("genai-ingest.flow-run.")
    assert notified, f"the automation sent no notification (webhook got {hook.bodies})"
    assert "1 document(s) dead-lettered" in notified[0]["subject"]
    assert "password_required" in notified[0]["body"]
