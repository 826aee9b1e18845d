"""argilla-server search engine for osmem-server, plus the launcher that registers it.

This file runs INSIDE the Argilla server venv (see scripts/install-argilla-server.sh), never in
prefdelta's own env: it may import only what that venv has (argilla_server, opensearch-py, uvicorn,
alembic, the standard library) and nothing from prefdelta.

osmem-server speaks OpenSearch but refuses two things argilla-server 2.8.0 needs:

* scripted updates (``_update`` with ``script``), used when a response is submitted, updated or
  deleted and when a suggestion is deleted: done here as read-modify-write of ``_source``, guarded
  by ``if_seq_no``/``if_primary_term`` and retried on conflict, so concurrent writers cannot lose
  each other's changes;
* ``knn`` queries, used by similarity search: done here as exact cosine in the server process over
  the filtered documents, scored like OpenSearch's ``cosinesimil`` ((1 + cos) / 2).

argilla-server picks its engine by name from ``SearchEngine.registered_classes`` (filled by the
``SearchEngine.register`` decorator at import time) using ``ARGILLA_SEARCH_ENGINE``. Its CLI never
imports third-party engines, so every server-side process (API server, worker) is started through
:func:`main`, which imports this module first:

    <server-venv>/bin/python -I argilla_engine.py serve --host 127.0.0.1 --port 6900
    <server-venv>/bin/python -I argilla_engine.py worker --num-workers 1
    <server-venv>/bin/python -I argilla_engine.py <any argilla_server CLI arguments>

``-I`` keeps this file's folder off ``sys.path``.

Why a script shipped as package data, not a module of prefdelta: the server venv cannot have
prefdelta installed (argilla-server pins ``typer<0.10`` and ``huggingface_hub<1``, which
prefdelta's own dependencies contradict), so ``python -m prefdelta.review.argilla_engine``
cannot work there; and in prefdelta's env ``argilla_server`` is missing, so as a module this
file would look importable and fail on import. It therefore lives in ``server_scripts/``, a
folder without ``__init__.py`` (no import system or ``pkgutil.walk_packages`` walks into it),
listed under ``[tool.setuptools.package-data]`` so that wheels carry it, and
:mod:`prefdelta.review.stack` runs it by path (``stack.ENGINE_FILE``), from a checkout or an
installed wheel alike.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from uuid import UUID

from argilla_server.models import Response, Suggestion, VectorSettings
from argilla_server.search_engine import OpenSearchEngine, SearchEngine
from argilla_server.search_engine.commons import (
    es_bool_query,
    es_exists_field_query,
    es_field_for_vector_settings,
    es_ids_query,
    es_index_name_for_dataset,
)
from opensearchpy.exceptions import ConflictError

ENGINE_NAME = "osmem"
"""Value of ``ARGILLA_SEARCH_ENGINE`` that selects :class:`OsmemSearchEngine`."""

OWNER_ENV = (
    "PREFDELTA_ARGILLA_USERNAME",
    "PREFDELTA_ARGILLA_PASSWORD",
    "PREFDELTA_ARGILLA_API_KEY",
)
"""Environment variables ``serve`` reads the owner account from (kept off the command line, where
``ps`` would show the password)."""

REINDEX_ENV = "PREFDELTA_ARGILLA_REINDEX"
"""Set to ``1`` by the stack when it reuses a database: ``serve`` rebuilds the indices first."""

EXIT_ON_STDIN_EOF_ENV = "PREFDELTA_ARGILLA_EXIT_ON_STDIN_EOF"
"""Set to ``1`` by the stack: exit when stdin reaches EOF (the parent is gone)."""

_MAX_WRITE_ATTEMPTS = 20
_SCAN_PAGE = 1000

Source = dict[str, Any]


@SearchEngine.register(engine_name=ENGINE_NAME)
class OsmemSearchEngine(OpenSearchEngine):
    """OpenSearch engine whose scripted updates and knn queries run in Python, for osmem-server."""

    async def update_record_response(self, response: Response) -> None:
        new = self._map_record_response_to_es(response)

        def change(source: Source) -> None:
            kept = [r for r in source.get("responses") or [] if str(r.get("id")) != str(new["id"])]
            source["responses"] = [*kept, new]

        await self._modify_source(
            es_index_name_for_dataset(response.record.dataset), response.record.id, change
        )

    async def delete_record_response(self, response: Response) -> None:
        response_id = str(response.id)

        def change(source: Source) -> None:
            if source.get("responses") is not None:
                source["responses"] = [
                    r for r in source["responses"] if str(r.get("id")) != response_id
                ]

        await self._modify_source(
            es_index_name_for_dataset(response.record.dataset), response.record.id, change
        )

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        question_name = suggestion.question.name

        def change(source: Source) -> None:
            (source.get("suggestions") or {}).pop(question_name, None)

        await self._modify_source(
            es_index_name_for_dataset(suggestion.record.dataset), suggestion.record_id, change
        )

    async def _create_index_request(self, index_name: str, mappings: dict, settings: dict) -> None:
        # After a restart over a kept database, `reindex` recreates every dataset's index, drafts
        # included (osmem keeps nothing): publishing such a draft must not fail on "exists".
        if await self._index_exists_request(index_name):
            await self._delete_index_request(index_name)
        await super()._create_index_request(index_name, mappings, settings)

    async def _modify_source(
        self, index: str, doc_id: UUID | str, change: Callable[[Source], None]
    ) -> None:
        """Apply ``change`` to the stored document: what a painless script would do server-side."""
        for _ in range(_MAX_WRITE_ATTEMPTS):
            doc = await self.client.get(index=index, id=str(doc_id))
            source = doc["_source"]
            change(source)
            try:
                await self.client.index(
                    index=index,
                    id=str(doc_id),
                    body=source,
                    params={
                        "if_seq_no": doc["_seq_no"],
                        "if_primary_term": doc["_primary_term"],
                        "refresh": "true",
                    },
                )
                return
            except ConflictError:
                await asyncio.sleep(0.01)  # another writer won the race: re-read and re-apply
        raise RuntimeError(
            f"document {doc_id} in {index} kept changing; gave up after {_MAX_WRITE_ATTEMPTS} tries"
        )

    async def _request_similarity_search(
        self,
        index: str,
        vector_settings: VectorSettings,
        value: list[float],
        k: int,
        excluded_id: UUID | None = None,
        query_filters: list[dict] | None = None,
    ) -> dict:
        """Exact cosine top-k over the documents the filters keep, shaped like a search response.

        Unlike OpenSearch's knn + post_filter, filtering happens before ranking, so a filtered search
        still returns up to ``k`` hits (Elasticsearch's engine behaves the same way).
        """
        field = es_field_for_vector_settings(vector_settings)
        must: list[dict] = [es_exists_field_query(field)]
        if query_filters:
            must.append(
                es_bool_query(should=query_filters, minimum_should_match=len(query_filters))
            )
        must_not = [es_ids_query([str(excluded_id)])] if excluded_id else None
        query = es_bool_query(must=must, must_not=must_not)

        query_norm = _norm(value)
        scored: list[tuple[float, str]] = []
        offset = 0
        while True:
            page = await self.client.search(
                index=index,
                body={"query": query, "sort": [{"id": "asc"}], "_source": [field]},
                params={"from": offset, "size": _SCAN_PAGE},
            )
            hits = page["hits"]["hits"]
            for hit in hits:
                vector = _get_path(hit.get("_source") or {}, field)
                if vector:
                    scored.append((_cosine_score(value, query_norm, vector), hit["_id"]))
            if len(hits) < _SCAN_PAGE:
                break
            offset += len(hits)

        top = heapq.nlargest(k, scored)
        return {
            "hits": {
                "total": {"value": len(top), "relation": "eq"},
                "max_score": top[0][0] if top else None,
                "hits": [
                    {"_index": index, "_id": doc_id, "_score": score} for score, doc_id in top
                ],
            }
        }


def _get_path(source: Source, dotted: str) -> Any:
    node: Any = source
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def _cosine_score(query: list[float], query_norm: float, vector: list[float]) -> float:
    """OpenSearch ``cosinesimil`` score: (1 + cos) / 2, in [0, 1]; a zero vector scores as cos 0."""
    denominator = query_norm * _norm(vector)
    cosine = (
        math.fsum(a * b for a, b in zip(query, vector, strict=False)) / denominator
        if denominator
        else 0.0
    )
    return (1.0 + max(-1.0, min(1.0, cosine))) / 2.0


def _migrate() -> None:
    """Upgrade the database to head without alembic.ini.

    argilla's ``database migrate`` runs alembic with its ini file, whose logging section disables
    every logger created before it; in the long-lived server process that would hide its errors.
    """
    import argilla_server
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", os.path.join(os.path.dirname(argilla_server.__file__), "alembic")
    )
    command.upgrade(config, "head")


def _ensure_owner() -> None:
    """Create the owner account named by :data:`OWNER_ENV` (argilla skips it if it exists)."""
    username, password, api_key = (os.environ.get(name) for name in OWNER_ENV)
    if not (username and password and api_key):
        return
    from argilla_server.cli import app
    from argilla_server.database import async_engine

    app(
        args=[
            "database",
            "users",
            "create",
            "--first-name",
            username,
            "--username",
            username,
            "--role",
            "owner",
            "--password",
            password,
            "--api-key",
            api_key,
        ],
        prog_name="argilla_server",
        standalone_mode=False,
    )
    # The CLI ran on its own event loop; drop its pooled connections before uvicorn starts another.
    asyncio.run(async_engine.dispose())


def _reindex() -> None:
    """Rebuild every index from the database: osmem is in memory, the SQLite file is not."""
    from argilla_server.cli import app
    from argilla_server.database import async_engine

    app(args=["search-engine", "reindex"], prog_name="argilla_server", standalone_mode=False)
    asyncio.run(async_engine.dispose())


def _serve(argv: list[str]) -> None:
    """Migrate, ensure the owner, then run the API server: one interpreter start instead of three."""
    parser = argparse.ArgumentParser(prog="argilla_engine.py serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6900)
    parser.add_argument(
        "--fd", type=int, help="an already bound listening socket inherited from the caller"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    _migrate()
    _ensure_owner()
    if os.environ.get(REINDEX_ENV) == "1":
        _reindex()

    import uvicorn

    config = uvicorn.Config(
        "argilla_server:app",
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=args.log_level,
        # longer than any client keeps an idle connection: the client, not the server,
        # closes it, so no request is ever sent on a connection being closed under it
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    server.run(sockets=sockets)


def _exit_when_stdin_closes() -> None:
    """Stop this process group once the parent's end of our stdin closes, i.e. once it died.

    The parent (prefdelta.review.stack) stops us with signals; this covers a parent that was
    killed before it could, so no server or rq worker outlives it.
    """

    # Read a private copy of fd 0 with os.read: a thread blocked in sys.stdin.read() holds the
    # stream's lock, and multiprocessing children (rq's workers) deadlock closing sys.stdin.
    stdin_fd = os.dup(0)

    def watch() -> None:
        with suppress(OSError):
            while os.read(stdin_fd, 65536):
                pass
        # Our whole group only if we lead it (the stack starts us in a session of our own).
        target = os.getpgrp() if os.getpgrp() == os.getpid() else None
        for sig, delay in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
            if target is None:
                os.kill(os.getpid(), sig)
            else:
                os.killpg(target, sig)
            time.sleep(delay)

    threading.Thread(target=watch, name="exit-on-stdin-eof", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Run argilla-server's CLI (or ``serve``) with :class:`OsmemSearchEngine` registered."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(EXIT_ON_STDIN_EOF_ENV) == "1":
        _exit_when_stdin_closes()
    # argilla quiets this logger only when its engine is named "opensearch".
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    if args[:1] == ["serve"]:
        _serve(args[1:])
        return
    if args[:1] == ["worker"]:
        # rq's worker pool starts workers with multiprocessing: they must inherit this registration.
        multiprocessing.set_start_method("fork", force=True)
    from argilla_server.cli import app

    app(args=args, prog_name="argilla_server")


if __name__ == "__main__":
    main()
