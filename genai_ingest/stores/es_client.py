"""The Elasticsearch client: REST API version negotiation, credentials, error translation, and
the two primitives every index here is built on (create-if-missing, full scan in key order).

Everything sent here lives in the server core: the JDK-less ``integ-test-zip`` build that the
tests run has no ``rest-root`` (``GET /`` answers 405), no painless and no ``reindex`` module
(no ``_delete_by_query``), so the server version comes from the nodes-info API instead."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from elasticsearch import ApiError, Elasticsearch, TransportError
from elasticsearch import __versionstr__ as client_version

from genai_ingest.config import Settings
from genai_ingest.failures.errors import IngestError, Stage, StoreUnavailable, SystemFault
from genai_ingest.failures.redact import redact, register_secret

PAGE_SIZE = 2000
PIT_KEEP_ALIVE = "2m"
#: Where the server version is read (``GET /`` needs the optional ``rest-root`` module).
VERSION_PATH = "/_nodes/_local"


def is_transient_status(status: int) -> bool:
    """Timeouts, back-pressure (429) and server-side failures: worth a retry."""
    return status in (408, 429) or status >= 500


def api_error(exc: Exception, action: str) -> IngestError:
    """A client exception as a pipeline error: transport failures, 408/429/5xx are transient."""
    if isinstance(exc, ApiError) and not is_transient_status(exc.status_code):
        return SystemFault(
            redact(f"elasticsearch {action}: {exc.status_code} {exc.message}"), stage=Stage.STORE
        )
    return StoreUnavailable(redact(f"elasticsearch {action}: {exc}"), stage=Stage.STORE)


def response_error(response: dict[str, Any], action: str) -> IngestError:
    """One failed response of an ``msearch`` as a pipeline error (as ``api_error``)."""
    status = int(response.get("status", 500))
    message = redact(f"elasticsearch {action}: {status} {response['error']}")
    if is_transient_status(status):
        return StoreUnavailable(message, stage=Stage.STORE)
    return SystemFault(message, stage=Stage.STORE)


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Client exceptions as pipeline errors (``StoreUnavailable`` for outages)."""
    try:
        yield
    except (ApiError, TransportError) as exc:
        raise api_error(exc, action) from exc


def compat_mimetype(mimetype: str, major: int) -> str:
    """``application/json`` -> ``application/vnd.elasticsearch+json; compatible-with=N``."""
    return re.sub(
        r"application/(json|x-ndjson)\b",
        rf"application/vnd.elasticsearch+\1; compatible-with={major}",
        mimetype,
    )


def server_major(nodes_info: dict[str, Any]) -> int:
    """The lowest major version among the nodes of a nodes-info response."""
    return min(int(str(node["version"]).split(".")[0]) for node in nodes_info["nodes"].values())


class CompatElasticsearch(Elasticsearch):
    """The official client, speaking the REST API version of the server it finds.

    A 9.x client sends ``compatible-with=9``, which 8.x servers refuse; 8.x and 9.x servers
    both accept ``compatible-with=8``. The first request asks the nodes-info API for the
    server version (as 8), then the client uses ``min(server major, client major)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rest_major: int | None = None

    def perform_request(
        self,
        method: str,
        path: str,
        *,
        headers: Any = None,
        **kwargs: Any,
    ) -> Any:
        if self.rest_major is None and path != VERSION_PATH:
            info = self.perform_request(
                "GET",
                VERSION_PATH,
                params={"filter_path": "nodes.*.version"},
                headers={"accept": "application/json"},
            )
            client_major = int(client_version.split(".")[0])
            self.rest_major = min(server_major(info.body), client_major)
        major = self.rest_major or 8
        headers = {k: compat_mimetype(v, major) for k, v in (headers or {}).items()}
        return super().perform_request(method, path, headers=headers, **kwargs)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def client_from_settings(settings: Settings) -> CompatElasticsearch:
    """A client for ``settings.store_url`` (or ``cloud_id``); every credential is registered
    with ``redact`` before it can reach a log line."""
    es = settings.elasticsearch
    kwargs: dict[str, Any] = {
        "request_timeout": es.request_timeout_s,
        "verify_certs": es.verify_certs,
        "max_retries": 2,
        "retry_on_timeout": True,
        # 429 back-pressure is left to the caller's policy: backoff with jitter, counted
        "retry_on_status": (502, 503, 504),
    }
    if es.cloud_id:
        kwargs["cloud_id"] = es.cloud_id
    else:
        url = settings.store_url or ""
        register_secret(urlsplit(url).password)
        kwargs["hosts"] = [url]
    if es.ca_certs:
        kwargs["ca_certs"] = str(es.ca_certs)
    api_key, password = _secret(es.api_key), _secret(es.password)
    register_secret(api_key)
    register_secret(password)
    if api_key:
        kwargs["api_key"] = api_key
    elif es.username and password:
        kwargs["basic_auth"] = (es.username, password)
    return CompatElasticsearch(**kwargs)


def create_index(client: Elasticsearch, index: str, mappings: dict[str, Any]) -> None:
    """Create an index unless it exists (safe when several workers race)."""
    with translated(f"create {index}"):
        try:
            client.indices.create(index=index, mappings=mappings)
        except ApiError as exc:
            if exc.error != "resource_already_exists_exception":
                raise


def scan(
    client: Elasticsearch,
    index: str,
    query: dict[str, Any],
    sort_field: str,
    source: Any = False,
) -> Iterator[dict[str, Any]]:
    """Every hit of ``query``, ascending by ``sort_field``: point-in-time + ``search_after``
    (consistent and unbounded, unlike ``from``/``size``)."""
    with translated(f"scan {index}"):
        pit_id = client.open_point_in_time(index=index, keep_alive=PIT_KEEP_ALIVE)["id"]
        try:
            after: list[Any] | None = None
            while True:
                page = client.search(
                    pit={"id": pit_id, "keep_alive": PIT_KEEP_ALIVE},
                    query=query,
                    sort=[{sort_field: "asc"}],
                    search_after=after,
                    size=PAGE_SIZE,
                    source=source,
                    track_total_hits=False,
                )
                pit_id = page.get("pit_id", pit_id)
                hits = page["hits"]["hits"]
                yield from hits
                if len(hits) < PAGE_SIZE:
                    return
                after = hits[-1]["sort"]
        finally:
            client.close_point_in_time(id=pit_id)
