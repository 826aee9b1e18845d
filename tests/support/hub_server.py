"""A Hub-compatible HTTP server on loopback, for tests that drive the real clients.

Why: no package implements the Hub's API, and HTTP mocks would only prove that we
agree with ourselves. This server speaks the subset of the protocol that
huggingface_hub 1.33 and datasets 5.2 use, keeps every commit as an immutable snapshot over content-addressed blobs,
and injects seeded faults so tests can prove client retries and atomic publishes.

Never import huggingface_hub or datasets here: conftest imports this module before it
sets HF_ENDPOINT, which those libraries read once, at import time.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import logging
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

import uvicorn
import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# ----------------------------------------------------------------------------- constants

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_JSON = "application/vnd.git-lfs+json"
REGULAR_MAX_SIZE = 10 * 1024 * 1024  # the Hub refuses larger non-LFS files
YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_LFS_PATTERN_TEXT = """
*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.lz4 *.mds *.mlmodel *.model
*.msgpack *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors
saved_model/**/* *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents* *.gguf
*.mp3 *.ogg *.wav *.flac *.bmp *.gif *.png *.tiff *.jpg *.jpeg *.webp *.mp4 *.webm
"""
# What the Hub writes in a new repo's first commit; it decides which paths go to LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _LFS_PATTERN_TEXT.split()
)


def _git_oid(data: bytes) -> str:
    """Git's blob id: what the Hub reports as a file's `oid` and regular files' ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(dt: datetime) -> str:
    """The one date format huggingface_hub's parse_datetime accepts."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in {"1", "true", "yes"}


# ----------------------------------------------------------------------------- storage


class BlobStore:
    """Content-addressed bytes on disk (sha256 -> file), written once then immutable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.wipe()

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        (self.root / "blobs").mkdir(parents=True)
        (self.root / "tmp").mkdir()

    def path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has(sha256):
            tmp = Path(tempfile.mkstemp(dir=self.root / "tmp")[1])
            tmp.write_bytes(data)
            tmp.replace(self.path(sha256))
        return sha256

    async def put_stream(self, request: Request, oid: str, size: int) -> bool:
        """Stream an upload to disk; keep it only if its sha256 and size match (LFS PUT)."""
        fd, name = tempfile.mkstemp(dir=self.root / "tmp")
        digest, written = hashlib.sha256(), 0
        with open(fd, "wb") as out:
            async for chunk in request.stream():
                digest.update(chunk)
                written += len(chunk)
                out.write(chunk)
        ok = digest.hexdigest() == oid and written == size
        if ok:
            Path(name).replace(self.path(oid))
        else:
            Path(name).unlink()
        return ok

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot: the blob it points at and how git would see it."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob id of the content (regular) or of the LFS pointer

    @staticmethod
    def pointer(sha256: str, size: int) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()

    @classmethod
    def regular(cls, data: bytes, sha256: str) -> FileEntry:
        return cls(sha256, len(data), False, _git_oid(data))

    @classmethod
    def large(cls, sha256: str, size: int) -> FileEntry:
        return cls(sha256, size, True, _git_oid(cls.pointer(sha256, size)))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid

    def to_json(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": path}
        if self.lfs:
            out["lfs"] = {
                "oid": self.sha256,
                "size": self.size,
                "pointerSize": len(self.pointer(self.sha256, self.size)),
            }
        return out


@dataclass(frozen=True)
class Commit:
    """An immutable snapshot: path -> FileEntry, plus its parent and message."""

    sha: str
    parent: str | None
    files: Mapping[str, FileEntry]
    title: str
    message: str
    author: str
    date: datetime


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    created_at: datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo
    pending_lfs: dict[str, int] = field(default_factory=dict)  # announced by batch: oid -> size

    @property
    def url_path(self) -> str:
        return URL_PREFIX[self.type] + self.id

    def resolve(self, rev: str) -> Commit | None:
        """Branch, tag, refs/heads|tags/..., full sha or a unique sha prefix (>= 7)."""
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix):
                sha = refs.get(rev[len(prefix) :])
                return self.commits[sha] if sha else None
        sha = self.branches.get(rev) or self.tags.get(rev)
        if sha:
            return self.commits[sha]
        if rev in self.commits:
            return self.commits[rev]
        if len(rev) >= 7 and re.fullmatch(r"[0-9a-f]+", rev):
            hits = [c for s, c in self.commits.items() if s.startswith(rev)]
            return hits[0] if len(hits) == 1 else None
        return None

    def history(self, head: Commit) -> list[Commit]:
        out: list[Commit] = [head]
        while out[-1].parent:
            out.append(self.commits[out[-1].parent])
        return out


def _subtree(files: Mapping[str, FileEntry], folder: str) -> dict[str, FileEntry]:
    prefix = folder.rstrip("/") + "/" if folder else ""
    return {p: e for p, e in files.items() if p.startswith(prefix)}


def _folder_oid(files: Mapping[str, FileEntry], folder: str) -> str:
    listing = "".join(f"{p}\0{e.oid}\n" for p, e in sorted(_subtree(files, folder).items()))
    return hashlib.sha1(listing.encode()).hexdigest()


def _folders(files: Mapping[str, FileEntry]) -> set[str]:
    return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}


def _lfs_rules(files: Mapping[str, FileEntry], store: BlobStore) -> list[str]:
    entry = files.get(".gitattributes")
    if entry is None:
        return []
    text = store.read(entry.sha256).decode(errors="replace")
    return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()]


def _matches_lfs(path: str, rules: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for rule in rules:
        if "/" in rule:
            if fnmatch.fnmatch(path, rule.replace("**/", "*")):
                return True
        elif fnmatch.fnmatch(name, rule):
            return True
    return False


# ----------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail and how. Whether a request fails is a pure function of (seed,
    method, path, attempt number), so runs reproduce even when clients upload in threads.

    rate: fraction of matching requests that fail. paths: regexes searched in the raw
    request path (empty: all). kinds, taken in turn: "status" (a 5xx from `statuses`) and
    "drop" (the connection closes mid-response; HEAD and tiny bodies get a status instead).
    phase: "before" fails the request unprocessed; "after" runs it (a commit lands) and
    then loses the response. max_consecutive: after this many straight faults on one
    method+path the next attempt passes, so a retrying client always progresses.
    limit: total faults to inject. abort_commit_after_ops: every commit dies with a 500
    after staging this many operations (nothing of it is published).
    """

    rate: float = 0.0
    seed: int = 0
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("status", "drop")
    statuses: tuple[int, ...] = (500, 502, 503, 504)
    phase: str = "before"
    max_consecutive: int | None = 2
    limit: int | None = None
    abort_commit_after_ops: int | None = None

    def __post_init__(self) -> None:
        if self.phase not in ("before", "after"):
            raise ValueError(f"phase must be 'before' or 'after', not {self.phase!r}")
        if not self.kinds or not set(self.kinds) <= {"status", "drop"}:
            raise ValueError(f"kinds must be among 'status' and 'drop', not {self.kinds!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {self.rate}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultPlan:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Fault:
    kind: str  # "status" | "drop"
    status: int
    phase: str


class FaultInjector:
    """Decides per request whether to fail it, and records what happened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.plan = FaultPlan()
        self._attempts: dict[tuple[str, str], int] = {}
        self._streak: dict[tuple[str, str], int] = {}
        self.log: list[tuple[str, str, int, str]] = []  # (method, path, status, ""|status|drop)
        self.injected = 0
        self.commit_aborts = 0

    def configure(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._attempts.clear()
            self._streak.clear()
            self.injected = self.commit_aborts = 0

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def decide(self, method: str, path: str) -> Fault | None:
        plan = self.plan
        with self._lock:
            if plan.rate <= 0 or (plan.limit is not None and self.injected >= plan.limit):
                return None
            if plan.methods and method not in plan.methods:
                return None
            if plan.paths and not any(re.search(p, path) for p in plan.paths):
                return None
            key = (method, path)
            attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
            rng = random.Random(f"{plan.seed}:{method}:{path}:{attempt}")
            streak_full = (
                plan.max_consecutive is not None
                and self._streak.get(key, 0) >= plan.max_consecutive
            )
            if streak_full or rng.random() >= plan.rate:
                self._streak[key] = 0
                return None
            self._streak[key] = self._streak.get(key, 0) + 1
            kind = plan.kinds[self.injected % len(plan.kinds)]  # alternate: every kind shows up
            self.injected += 1
            return Fault(kind, rng.choice(plan.statuses), plan.phase)

    def record(self, method: str, path: str, status: int, fault: str) -> None:
        with self._lock:
            self.log.append((method, path, status, fault))

    def count_commit_abort(self) -> None:
        with self._lock:
            self.commit_aborts += 1


class _CommitAborted(Exception):
    """Raised inside a commit to prove a half-applied commit is never published."""


# ----------------------------------------------------------------------------- the app


class HubError(Exception):
    """An error response in the Hub's shape (X-Error-Code drives client exceptions)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})

    def response(self) -> Response:
        safe = self.message.encode("ascii", "replace").decode().replace("\n", " ")
        headers = {**self.headers, "X-Error-Message": safe}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, self.status, headers=headers)


Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
_TYPE = r"(?P<type>models|datasets|spaces)"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"
_PREFIX = r"(?P<prefix>datasets/|spaces/)?"


class HubApp:
    """The ASGI app: raw-path routing (revisions may hold %2F), state, fault injection."""

    def __init__(self, root: Path, user: str = "tester", token: str | None = None) -> None:
        self.store = BlobStore(root)
        self.user, self.token = user, token
        self.base_url = ""  # set by HubServer once the port is known
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.faults = FaultInjector()
        self.tree_page_size = 1000
        self.commits_page_size = 50
        self._counter = itertools.count()  # never reset: a sha is never reused for new content
        api = rf"^/api/{_TYPE}/{_REPO}"
        lfs = rf"^/{_PREFIX}(?P<repo>[^/]+/[^/]+?)\.git/info/lfs/objects"
        self.routes: list[tuple[set[str], re.Pattern[str], Handler]] = [
            ({"GET"}, re.compile(r"^/api/whoami-v2$"), self.whoami),
            ({"POST"}, re.compile(r"^/api/repos/create$"), self.create_repo),
            ({"DELETE"}, re.compile(r"^/api/repos/delete$"), self.delete_repo),
            ({"POST"}, re.compile(r"^/api/validate-yaml$"), self.validate_yaml),
            ({"GET"}, re.compile(rf"{api}(?:/revision/{_REV})?$"), self.repo_info),
            ({"PUT"}, re.compile(rf"{api}/settings$"), self.settings),
            ({"POST"}, re.compile(rf"{api}/preupload/{_REV}$"), self.preupload),
            ({"POST"}, re.compile(rf"{api}/commit/{_REV}$"), self.commit),
            ({"GET"}, re.compile(rf"{api}/tree/{_REV}(?:/(?P<path>.+))?$"), self.tree),
            ({"POST"}, re.compile(rf"{api}/paths-info/{_REV}$"), self.paths_info),
            ({"GET"}, re.compile(rf"{api}/refs$"), self.refs),
            ({"GET"}, re.compile(rf"{api}/commits/{_REV}$"), self.commits),
            ({"POST", "DELETE"}, re.compile(rf"{api}/tag/{_REV}$"), self.tag),
            ({"POST", "DELETE"}, re.compile(rf"{api}/branch/{_REV}$"), self.branch),
            ({"POST"}, re.compile(rf"{lfs}/batch$"), self.lfs_batch),
            ({"POST"}, re.compile(rf"{lfs}/verify$"), self.lfs_verify),
            ({"PUT", "GET"}, re.compile(rf"{lfs}/(?P<oid>[0-9a-f]{{64}})$"), self.lfs_object),
            (
                {"GET", "HEAD"},
                re.compile(rf"^/{_PREFIX}{_REPO}/resolve/{_REV}/(?P<path>.+)$"),
                self.resolve,
            ),
            ({"POST", "DELETE"}, re.compile(r"^/_admin/faults$"), self.admin_faults),
            ({"POST"}, re.compile(r"^/_admin/reset$"), self.admin_reset),
            ({"GET"}, re.compile(r"^/_admin/stats$"), self.admin_stats),
        ]

    # -- plumbing ----------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.repos.clear()
            self.store.wipe()
        self.faults.configure(FaultPlan())
        self.faults.clear_log()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        method, path = request.method, scope["raw_path"].decode("latin-1")
        admin = path.startswith("/_admin/")
        fault = None if admin else self.faults.decide(method, path)
        if fault and fault.phase == "before" and (fault.kind == "status" or method != "GET"):
            await request.body()  # the request arrived, then the server failed
            response = self._fault_response(fault)
        else:  # handled for real: phase "after", or a read-only GET whose body gets cut
            response = await self._dispatch(request, method, path)
        # A cut needs a body to cut: HEAD and tiny bodies get a status fault instead.
        drop = (
            fault is not None
            and fault.kind == "drop"
            and method != "HEAD"
            and len(response.body) >= 2
        )
        if fault and not drop:
            response = self._fault_response(fault)
        if not admin:
            kind = "drop" if drop else "status" if fault else ""
            self.faults.record(method, path, response.status_code, kind)
        if drop:
            body = response.body
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response.raw_headers,
                }
            )
            await send(
                {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
            )
            return  # uvicorn closes the connection: the client sees a truncated body
        await response(scope, receive, send)

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        message = f"injected fault ({fault.kind}, {fault.phase})"
        status = fault.status if fault.kind == "status" else 503
        return JSONResponse(
            {"error": message, "padding": "x" * 64}, status, headers={"X-Error-Message": message}
        )

    async def _dispatch(self, request: Request, method: str, path: str) -> Response:
        allowed = False
        for methods, pattern, handler in self.routes:
            match = pattern.match(path)
            if not match:
                continue
            if method not in methods:
                allowed = True
                continue
            groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            try:
                return await handler(request, groups)
            except HubError as err:
                return err.response()
            except _CommitAborted as err:
                return HubError(500, str(err)).response()
            except (ValueError, KeyError, TypeError) as err:  # a malformed request, not a 5xx
                return HubError(400, f"bad request: {err!r}").response()
        if allowed:
            return HubError(405, f"{method} not allowed on {path}").response()
        return HubError(404, f"no route for {method} {path}").response()

    def _auth(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        return header[7:] if header.lower().startswith("bearer ") and header[7:] else None

    def _require_write(self, request: Request) -> None:
        token = self._auth(request)
        if token is None or (self.token is not None and token != self.token):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, request: Request, m: dict[str, str], *, presigned: bool = False) -> Repo:
        """The repo a request names; private ones need a token, except on a presigned URL."""
        rtype = (
            REPO_TYPES[m["type"]]
            if "type" in m
            else {"": "model", "datasets/": "dataset", "spaces/": "space"}[m.get("prefix", "")]
        )
        repo = self.repos.get((rtype, m["repo"]))
        if repo is None or (repo.private and not presigned and self._auth(request) is None):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _new_commit(
        self,
        repo: Repo,
        parent: Commit | None,
        files: dict[str, FileEntry],
        title: str,
        message: str,
        author: str,
    ) -> Commit:
        date = _now()
        seed = json.dumps(
            [
                parent.sha if parent else None,
                sorted((p, e.oid) for p, e in files.items()),
                title,
                message,
                _iso(date),
                next(self._counter),
            ]
        )
        commit = Commit(
            hashlib.sha1(seed.encode()).hexdigest(),
            parent.sha if parent else None,
            MappingProxyType(dict(files)),
            title,
            message,
            author,
            date,
        )
        repo.commits[commit.sha] = commit
        return commit

    def _entry_json(
        self, repo: Repo, head: Commit, path: str, entry: FileEntry | None, expand: bool
    ) -> dict[str, Any]:
        if entry is not None:
            out = entry.to_json(path)
        else:
            out = {
                "type": "directory",
                "oid": _folder_oid(head.files, path),
                "size": 0,
                "path": path,
            }
        if expand:
            last = self._last_change(repo, head, path, entry is None)
            out["lastCommit"] = {"id": last.sha, "title": last.title, "date": _iso(last.date)}
        return out

    def _last_change(self, repo: Repo, head: Commit, path: str, folder: bool) -> Commit:
        def state(c: Commit) -> Any:
            return _folder_oid(c.files, path) if folder else c.files.get(path)

        history = repo.history(head)
        for commit, parent in itertools.pairwise(history):
            if state(commit) != state(parent):
                return commit
        return history[-1]

    def _card_data(self, commit: Commit) -> dict[str, Any] | None:
        entry = commit.files.get("README.md")
        if entry is None:
            return None
        match = YAML_BLOCK.search(self.store.read(entry.sha256).decode(errors="replace"))
        try:
            data = yaml.safe_load(match.group(2)) if match else None
        except yaml.YAMLError:
            return None
        return data if isinstance(data, dict) else None

    # -- account and repos -------------------------------------------------------------

    async def whoami(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        return JSONResponse(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.user,
                "fullname": "Test User",
                "email": f"{self.user}@example.invalid",
                "emailVerified": True,
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "tests", "role": "write"},
                },
            }
        )

    async def create_repo(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        body = await request.json()
        rtype = body.get("type") or "model"
        if rtype not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {rtype}")
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = f"{self.base_url}/{URL_PREFIX[rtype]}{repo_id}"
        with self.lock:
            if (rtype, repo_id) in self.repos:
                # The Hub answers 409 with the url; create_repo(exist_ok=True) reads it.
                return JSONResponse({"error": "You already created this repo", "url": url}, 409)
            private = body.get("visibility") == "private" or bool(body.get("private"))
            repo = Repo(rtype, repo_id, private, _now())
            attrs = DEFAULT_GITATTRIBUTES.encode()
            files = {".gitattributes": FileEntry.regular(attrs, self.store.put(attrs))}
            first = self._new_commit(repo, None, files, "initial commit", "", "system")
            repo.branches["main"] = first.sha
            self.repos[(rtype, repo_id)] = repo
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def delete_repo(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        body = await request.json()
        key = (
            body.get("type") or "model",
            f"{body.get('organization') or self.user}/{body['name']}",
        )
        with self.lock:
            if self.repos.pop(key, None) is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
        return JSONResponse({})

    async def settings(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        body = await request.json()
        with self.lock:
            repo = self._repo(request, m)
            if "private" in body:
                repo.private = bool(body["private"])
            if "visibility" in body:
                repo.private = body["visibility"] == "private"
        return JSONResponse({})

    async def validate_yaml(self, request: Request, m: dict[str, str]) -> Response:
        body = await request.json()
        match = YAML_BLOCK.search(body.get("content", ""))
        errors: list[dict[str, str]] = []
        try:
            data = yaml.safe_load(match.group(2)) if match else {}
            if data is not None and not isinstance(data, dict):
                errors.append({"message": "metadata must be a YAML mapping"})
            configs = (data or {}).get("configs", []) if isinstance(data, dict) else []
            if not isinstance(configs, list) or not all(
                isinstance(c, dict) and "config_name" in c for c in configs
            ):
                errors.append({"message": "configs must be a list of mappings with config_name"})
        except yaml.YAMLError as err:
            errors.append({"message": f"invalid YAML: {err}"})
        return JSONResponse({"errors": errors, "warnings": []}, 400 if errors else 200)

    async def repo_info(self, request: Request, m: dict[str, str]) -> Response:
        with self.lock:
            repo = self._repo(request, m)
            commit = self._commit(repo, m.get("rev", "main"))
            blobs = _truthy(request.query_params.get("blobs"))
            siblings = []
            for path, entry in sorted(commit.files.items()):
                sib: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sib |= {"size": entry.size, "blobId": entry.oid}
                    if entry.lfs:
                        sib["lfs"] = {
                            "size": entry.size,
                            "sha256": entry.sha256,
                            "pointerSize": len(FileEntry.pointer(entry.sha256, entry.size)),
                        }
                siblings.append(sib)
            info: dict[str, Any] = {
                "_id": commit.sha[:24],
                "id": repo.id,
                "author": repo.id.split("/")[0],
                "sha": commit.sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "createdAt": _iso(repo.created_at),
                "lastModified": _iso(commit.date),
                "siblings": siblings,
                "usedStorage": sum(e.size for e in commit.files.values()),
            }
            if (card := self._card_data(commit)) is not None:
                info["cardData"] = card
            if repo.type == "model":
                info["modelId"] = repo.id
        return JSONResponse(info)

    # -- upload: preupload, LFS, commit --------------------------------------------------

    async def preupload(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        body = await request.json()
        if _truthy(request.query_params.get("create_pr")):
            raise HubError(400, "create_pr is not supported by the test hub")
        with self.lock:
            repo = self._repo(request, m)
            head = self._commit(repo, m["rev"])
            rules = _lfs_rules(head.files, self.store)
            out = []
            for f in body["files"]:
                sample = base64.b64decode(f.get("sample", ""))
                lfs = (
                    _matches_lfs(f["path"], rules)
                    or f["size"] > REGULAR_MAX_SIZE
                    or b"\0" in sample
                )
                entry = head.files.get(f["path"])
                oid = None if entry is None else (entry.sha256 if entry.lfs else entry.oid)
                out.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
        return JSONResponse({"files": out, "commitOid": head.sha})

    def _lfs_href(self, repo: Repo, tail: str) -> str:
        return f"{self.base_url}/{repo.url_path}.git/info/lfs/objects/{tail}"

    async def lfs_batch(self, request: Request, m: dict[str, str]) -> Response:
        body = await request.json()
        upload = body.get("operation") == "upload"
        if upload:
            self._require_write(request)
        objects = []
        with self.lock:
            repo = self._repo(request, m)
            for obj in body.get("objects", []):
                oid, size = str(obj.get("oid", "")), int(obj.get("size", 0))
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                present = oid in repo.lfs_oids and self.store.has(oid)
                if not re.fullmatch(r"[0-9a-f]{64}", oid):
                    item["error"] = {"code": 422, "message": "Invalid oid"}
                elif upload and not present:
                    repo.pending_lfs[oid] = size
                    item["actions"] = {
                        "upload": {"href": self._lfs_href(repo, oid)},
                        "verify": {"href": self._lfs_href(repo, "verify")},
                    }
                elif not upload and present:
                    item["actions"] = {"download": {"href": self._lfs_href(repo, oid)}}
                elif not upload:
                    item["error"] = {"code": 404, "message": "Object does not exist"}
                objects.append(item)
        return JSONResponse({"transfer": "basic", "objects": objects}, media_type=LFS_JSON)

    async def lfs_object(self, request: Request, m: dict[str, str]) -> Response:
        oid = m["oid"]
        with self.lock:
            # the real Hub hands out presigned upload URLs: the client sends no token with them
            repo = self._repo(request, m, presigned=request.method == "PUT")
            size = repo.pending_lfs.get(oid)
            known = oid in repo.lfs_oids
        if request.method == "GET":
            if not known:
                raise HubError(404, "Object does not exist")
            return Response(self.store.read(oid), media_type="application/octet-stream")
        if size is None and not known:  # like a presigned URL: only for announced objects
            raise HubError(403, "upload was not announced through the LFS batch API")
        if known:
            async for _ in request.stream():
                pass
            return Response(b"")
        if not await self.store.put_stream(request, oid, size or 0):
            raise HubError(400, "uploaded content does not match its oid and size")
        with self.lock:
            repo.lfs_oids.add(oid)
            repo.pending_lfs.pop(oid, None)
        return Response(b"")

    async def lfs_verify(self, request: Request, m: dict[str, str]) -> Response:
        body = await request.json()
        with self.lock:
            repo = self._repo(request, m)
            ok = body.get("oid") in repo.lfs_oids and self.store.has(body["oid"])
            if ok and self.store.path(body["oid"]).stat().st_size != body.get("size"):
                raise HubError(422, "size mismatch")
        if not ok:
            raise HubError(404, "Object does not exist")
        return JSONResponse({"success": True}, media_type=LFS_JSON)

    async def commit(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        raw = await request.body()
        if _truthy(request.query_params.get("create_pr")):
            raise HubError(400, "create_pr is not supported by the test hub")
        try:
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise HubError(400, f"invalid NDJSON: {err}") from err
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line must be the header")
        header = lines[0]["value"]
        branch = m["rev"].removeprefix("refs/heads/")
        with self.lock:  # no await below: the commit is validated and applied atomically
            repo = self._repo(request, m)
            if branch not in repo.branches:
                if repo.resolve(m["rev"]) is not None:
                    raise HubError(400, f"Cannot commit to {m['rev']}: not a branch")
                raise HubError(404, f"Invalid rev id: {m['rev']}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and parent != head.sha:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            staged = self._stage(repo, head, lines[1:])
            commit = self._new_commit(
                repo,
                head,
                staged,
                header.get("summary", ""),
                header.get("description", ""),
                self.user,
            )
            repo.branches[branch] = commit.sha
        return JSONResponse(
            {
                "success": True,
                "commitOid": commit.sha,
                "hookOutput": "",
                "pullRequestUrl": None,
                "commitUrl": f"{self.base_url}/{repo.url_path}/commit/{commit.sha}",
            }
        )

    def _stage(self, repo: Repo, head: Commit, ops: list[dict[str, Any]]) -> dict[str, FileEntry]:
        """Apply operations to a copy of the head snapshot; any error discards the copy."""
        staged = dict(head.files)
        rules = _lfs_rules(head.files, self.store)
        abort_after = self.faults.plan.abort_commit_after_ops
        for n, op in enumerate(ops, start=1):
            key, value = op.get("key"), op.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if key == "file":
                data = (
                    base64.b64decode(value["content"])
                    if value.get("encoding") == "base64"
                    else str(value["content"]).encode()
                )
                if data and (
                    _matches_lfs(path, rules) or b"\0" in data[:512] or len(data) > REGULAR_MAX_SIZE
                ):
                    raise HubError(400, f"{path} must be uploaded with LFS, not as a regular file")
                staged[path] = FileEntry.regular(data, self.store.put(data))
            elif key == "lfsFile":
                oid = value.get("oid", "")
                if oid not in repo.lfs_oids or not self.store.has(oid):
                    raise HubError(
                        422,
                        "Your push was rejected because an LFS pointer pointed to "
                        f"a file that does not exist. Offending file: - {path}",
                    )
                size = self.store.path(oid).stat().st_size
                if value.get("size") not in (None, size):
                    raise HubError(422, f"LFS object size mismatch for {path}")
                staged[path] = FileEntry.large(oid, size)
            elif key == "deletedFile":
                if staged.pop(path, None) is None:
                    raise HubError(
                        404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                    )
            elif key == "deletedFolder":
                doomed = _subtree(staged, path)
                if not doomed:
                    raise HubError(
                        404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                    )
                for p in doomed:
                    del staged[p]
            else:
                raise HubError(400, f"unknown commit operation: {key}")
            if abort_after is not None and n >= abort_after:
                self.faults.count_commit_abort()
                raise _CommitAborted(f"injected abort after {n} staged operation(s)")
        return staged

    # -- browsing: tree, paths-info, refs, commits, tags, branches -------------------------

    def _page(self, request: Request, items: list[Any], size: int, key: str) -> Response:
        try:
            start = int(request.query_params.get(key, "0"))
            size = int(request.query_params.get("limit", size))
        except ValueError as err:
            raise HubError(400, "bad pagination parameter") from err
        headers = {}
        if start + size < len(items):
            query = {**request.query_params, key: str(start + size)}
            next_url = f"{self.base_url}{request.scope['raw_path'].decode()}?{urlencode(query)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return JSONResponse(items[start : start + size], headers=headers)

    async def tree(self, request: Request, m: dict[str, str]) -> Response:
        folder = m.get("path", "").strip("/")
        recursive = _truthy(request.query_params.get("recursive"))
        expand = _truthy(request.query_params.get("expand"))
        with self.lock:
            repo = self._repo(request, m)
            head = self._commit(repo, m["rev"])
            folders = _folders(head.files)
            if folder and folder not in folders:
                raise HubError(
                    404,
                    f"{folder} is not a folder at {m['rev']}",
                    "EntryNotFound",
                    {"X-Repo-Commit": head.sha},
                )
            prefix = f"{folder}/" if folder else ""
            depth = prefix.count("/")
            paths = sorted(
                p
                for p in itertools.chain(folders, head.files)
                if p.startswith(prefix) and (recursive or p.count("/") == depth)
            )
            items = [self._entry_json(repo, head, p, head.files.get(p), expand) for p in paths]
        return self._page(request, items, 50 if expand else self.tree_page_size, "cursor")

    async def paths_info(self, request: Request, m: dict[str, str]) -> Response:
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(raw or b"{}")
            paths, expand = list(body.get("paths", [])), bool(body.get("expand"))
        else:
            form = parse_qs(raw.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy((form.get("expand") or [""])[0])
        with self.lock:
            repo = self._repo(request, m)
            head = self._commit(repo, m["rev"])
            folders = _folders(head.files)
            out = [
                self._entry_json(repo, head, p, head.files.get(p), expand)
                for p in (p.strip("/") for p in paths)
                if p in head.files or p in folders
            ]
        return JSONResponse(out)

    async def refs(self, request: Request, m: dict[str, str]) -> Response:
        with self.lock:
            repo = self._repo(request, m)

            def listing(refs: dict[str, str], kind: str) -> list[dict[str, str]]:
                return [
                    {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s}
                    for n, s in sorted(refs.items())
                ]

            out = {
                "branches": listing(repo.branches, "heads"),
                "tags": listing(repo.tags, "tags"),
                "converts": [],
                "pullRequests": [],
            }
        return JSONResponse(out)

    async def commits(self, request: Request, m: dict[str, str]) -> Response:
        with self.lock:
            repo = self._repo(request, m)
            items = [
                {
                    "id": c.sha,
                    "title": c.title,
                    "message": c.message,
                    "date": _iso(c.date),
                    "authors": [{"user": c.author, "avatar": ""}],
                }
                for c in repo.history(self._commit(repo, m["rev"]))
            ]
        return self._page(request, items, self.commits_page_size, "p")

    async def tag(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        body = await request.json() if request.method == "POST" else {}
        with self.lock:
            repo = self._repo(request, m)
            if request.method == "DELETE":
                if repo.tags.pop(m["rev"], None) is None:
                    raise HubError(404, f"Tag {m['rev']} does not exist", "RevisionNotFound")
                return JSONResponse({})
            commit = self._commit(repo, m["rev"])
            name = str(body.get("tag", ""))
            if not name or name.startswith("refs/"):
                raise HubError(400, f"Invalid tag name: {name!r}")
            if name in repo.tags:
                raise HubError(409, f"Tag {name} already exists")
            repo.tags[name] = commit.sha
        return JSONResponse({})

    async def branch(self, request: Request, m: dict[str, str]) -> Response:
        self._require_write(request)
        body = await request.json() if request.method == "POST" else {}
        name = m["rev"]
        with self.lock:
            repo = self._repo(request, m)
            if request.method == "DELETE":
                if name == "main" or repo.branches.pop(name, None) is None:
                    raise HubError(400 if name == "main" else 404, f"Cannot delete branch {name}")
                return JSONResponse({})
            if name in repo.branches:
                raise HubError(409, f"Branch {name} already exists")
            repo.branches[name] = self._commit(repo, body.get("startingPoint") or "main").sha
        return JSONResponse({})

    # -- download ------------------------------------------------------------------------

    async def resolve(self, request: Request, m: dict[str, str]) -> Response:
        with self.lock:
            repo = self._repo(request, m)
            commit = self._commit(repo, m["rev"])
            entry = commit.files.get(m["path"])
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if entry is None:
            raise HubError(404, f"Entry not found: {m['path']}", "EntryNotFound", headers)
        headers["ETag"] = f'"{entry.etag}"'
        if entry.lfs:
            headers |= {"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}
        start, end, status = 0, entry.size, 200
        range_header = request.headers.get("range")
        if range_header and (rng := re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())):
            first, last = rng.groups()
            if first:
                start, end = int(first), min(int(last) + 1, entry.size) if last else entry.size
            elif last:
                start = max(entry.size - int(last), 0)
            if start >= entry.size or start >= end:
                raise HubError(
                    416,
                    "Range not satisfiable",
                    headers={**headers, "Content-Range": f"bytes */{entry.size}"},
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(b"", status, headers=headers, media_type="application/octet-stream")
        with open(self.store.path(entry.sha256), "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        return Response(data, status, headers=headers, media_type="application/octet-stream")

    # -- admin (never faulted) -----------------------------------------------------------

    async def admin_faults(self, request: Request, m: dict[str, str]) -> Response:
        try:
            plan = (
                FaultPlan.from_json(await request.json())
                if request.method == "POST"
                else FaultPlan()
            )
        except (ValueError, TypeError) as err:
            raise HubError(400, str(err)) from err
        self.faults.configure(plan)
        return JSONResponse({})

    async def admin_reset(self, request: Request, m: dict[str, str]) -> Response:
        self.reset()
        return JSONResponse({})

    async def admin_stats(self, request: Request, m: dict[str, str]) -> Response:
        return JSONResponse(self.stats())

    def stats(self) -> dict[str, Any]:
        log = [
            dict(zip(("method", "path", "status", "fault"), x, strict=True))
            for x in self.faults.log
        ]
        return {
            "requests": len(log),
            "faults": sum(bool(x["fault"]) for x in log),
            "commit_aborts": self.faults.commit_aborts,
            "log": log,
        }


# ----------------------------------------------------------------------------- server


class _HideInjectedDrops(logging.Filter):
    """uvicorn logs an error for every response we cut on purpose; keep test output clean."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


class HubServer:
    """Runs HubApp with uvicorn in a daemon thread on a free 127.0.0.1 port.

    The socket is bound in __init__, so `.url` is known before `start()` (conftest must
    export HF_ENDPOINT before anything imports huggingface_hub).
    """

    def __init__(self, root: Path | str | None = None, *, token: str | None = None) -> None:
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="hub-server-")
        self.root = Path(root or self._tmp.name)  # type: ignore[union-attr]
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.app = HubApp(self.root / "store", token=token)
        self.app.base_url = self.url
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        logging.getLogger("uvicorn.error").addFilter(_HideInjectedDrops())
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            http="h11",
            ws="none",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="hub-server",
            daemon=True,
        )
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("the test hub server failed to start")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._sock.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, plan: FaultPlan | None = None, **settings: Any) -> FaultPlan:
        """Start failing requests (see FaultPlan); returns the plan now in force."""
        plan = plan or FaultPlan.from_json(settings)
        self.app.faults.configure(plan)
        return plan

    def clear_faults(self) -> None:
        self.app.faults.configure(FaultPlan())

    def reset(self) -> None:
        """Forget every repo, blob, fault and logged request."""
        self.app.reset()

    def stats(self) -> dict[str, Any]:
        """Requests since the last reset: {requests, faults, commit_aborts, log: [{method,
        path, status, fault}]}, where fault is "" (served), "status" or "drop" (cut)."""
        return self.app.stats()

    def clear_stats(self) -> None:
        self.app.faults.clear_log()
