"""One worker's claims on documents: taken before parsing, renewed by a heartbeat thread while
the worker works, released after the document's commit or failure.

A worker that dies stops renewing; its claims expire after ``ClaimPolicy.lease_s`` and another
run takes them over (at once when the dead worker ran on the same host: its pid is gone).
Writes are idempotent, so a claim lost to a stalled worker costs duplicate work, never a
corrupt index."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence

from genai_ingest.failures.errors import StoreUnavailable
from genai_ingest.failures.policies import ClaimPolicy
from genai_ingest.stores.base import DocumentClaims

log = logging.getLogger(__name__)


def new_owner() -> str:
    """A unique owner name that says where the worker runs (host, pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_dead_local_owner(owner: str) -> bool:
    """Whether ``owner`` (``host:pid:…``) was a process of this host that no longer exists."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


class ClaimKeeper:
    """The claims one worker process holds, kept alive by a heartbeat thread."""

    def __init__(self, claims: DocumentClaims, policy: ClaimPolicy, owner: str | None = None):
        self.claims = claims
        self.policy = policy
        self.owner = owner or new_owner()
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None

    def claim(self, doc_id: str) -> bool:
        """Claim a document for this worker; False while another live worker holds it."""
        if not self.claims.claim(doc_id, self.owner, self.policy.lease_s):
            holder = self.claims.holder(doc_id)
            if holder is None or not is_dead_local_owner(holder[0]):
                return False
            self.claims.release([doc_id], holder[0])  # its worker died: no need to wait
            if not self.claims.claim(doc_id, self.owner, self.policy.lease_s):
                return False
        with self._lock:
            self._held.add(doc_id)
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._renew_forever, name="claims-heartbeat", daemon=True
                )
                self._heartbeat.start()
        return True

    def release(self, doc_ids: Sequence[str]) -> None:
        with self._lock:
            mine = [d for d in doc_ids if d in self._held]
            self._held.difference_update(mine)
        if mine:
            try:
                self.claims.release(mine, self.owner)
            except StoreUnavailable as exc:  # the store is down: the leases expire by themselves
                log.warning("could not release %d document claims: %s", len(mine), exc)

    def state_of(self, doc_id: str, now: float) -> str:
        """``free`` (released: its worker finished it), ``live`` (held by a live worker) or
        ``expired`` (its worker stopped renewing)."""
        holder = self.claims.holder(doc_id)
        if holder is None:
            return "free"
        alive = holder[1] >= now and not is_dead_local_owner(holder[0])
        return "live" if alive else "expired"

    @property
    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.policy.lease_s / 3)
            held = self.held
            if not held:
                continue
            try:
                lost = self.claims.renew(sorted(held), self.owner, self.policy.lease_s)
            except Exception as exc:  # the store is down: try again next beat
                log.warning("could not renew %d document claims: %s", len(held), exc)
                continue
            if lost:
                log.warning("lost %d document claims (expired and taken over)", len(lost))
                with self._lock:
                    self._held.difference_update(lost)
