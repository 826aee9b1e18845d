"""The Argilla side of a review, shared by ``push`` and ``pull``: where the server is, one SDK
client, the workspace and dataset lookups, and SDK failures as one-line :class:`ReviewError` s.

Everything here reaches the server through the ``argilla`` SDK, imported when first called so
that importing this module stays cheap.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from prefdelta.errors import PrefdeltaError

if TYPE_CHECKING:
    import argilla as rg

API_URL_ENV, API_KEY_ENV = "ARGILLA_API_URL", "ARGILLA_API_KEY"
DEFAULT_API_URL = "http://localhost:6900"  # the argilla SDK's own default
KEEPALIVE_S = 2.0  # client side; uvicorn (Argilla's server) closes idle connections at 5 s
DEFAULT_WORKSPACE = "prefdelta"


class ReviewError(PrefdeltaError, RuntimeError):
    """A review step that cannot go ahead; ``str()`` is one line a user can act on."""


class ArgillaUnreachable(ReviewError):
    """No Argilla server answers at the URL: nothing listens there, or something else does."""


def not_argilla(url: str, why: str) -> ArgillaUnreachable:
    """The one line for a URL where no Argilla answered, whatever the reason (``why``)."""
    return ArgillaUnreachable(
        f"{url} did not answer as an Argilla server ({why}); start one with "
        f"`prefdelta review serve` or pass --api-url (or set {API_URL_ENV})"
    )


# --------------------------------------------------------------------------- connecting


def serve_credentials_file() -> Path:
    """Where a running ``prefdelta review serve`` leaves its URL and API key (0600), so
    that ``review push`` and ``review pull`` on this machine find it without flags."""
    from prefdelta.local_models import cache_dir

    return cache_dir() / "argilla" / "serve.json"


def save_serve_credentials(api_url: str, api_key: str) -> Path:
    """Record the running server's URL and key (owner-only file); returns its path."""
    from prefdelta.files import atomic_write

    path = serve_credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = json.dumps({"api_url": api_url, "api_key": api_key}, indent=2) + "\n"
    atomic_write(path, blob.encode(), mode=0o600)
    return path


def clear_serve_credentials(api_url: str) -> None:
    """Forget the server at ``api_url`` (and only it: another serve may have started since)."""
    if _saved_serve().get("api_url") == api_url:
        serve_credentials_file().unlink(missing_ok=True)


def _saved_serve() -> dict[str, str]:
    try:
        data = json.loads(serve_credentials_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_api(api_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The URL and key to use: the arguments, else ARGILLA_API_URL/ARGILLA_API_KEY, else
    what a running ``prefdelta review serve`` recorded (for its own URL only)."""
    url = api_url or os.environ.get(API_URL_ENV)
    key = api_key or os.environ.get(API_KEY_ENV)
    if key is None:
        saved = _saved_serve()
        if saved.get("api_key") and (url is None or url.rstrip("/") == saved.get("api_url")):
            url, key = url or saved.get("api_url"), saved["api_key"]
    return (url or DEFAULT_API_URL).rstrip("/"), key


def connect(api_url: str | None = None, api_key: str | None = None) -> rg.Argilla:
    """An SDK client, or a one-line :class:`ReviewError` saying what to do about it."""
    import argilla as rg
    import httpx
    from argilla._exceptions import ArgillaAPIError, ArgillaCredentialsError
    from pydantic import ValidationError

    url, key = resolve_api(api_url, api_key)
    if not key:
        raise ReviewError(
            f"no Argilla API key for {url}: pass --api-key, set {API_KEY_ENV}, or start "
            "`prefdelta review serve` (push and pull read the credentials it records)"
        )
    try:
        with quiet_sdk():
            # Idle pooled connections are dropped before uvicorn's 5 s keep-alive closes
            # them at the server: a request sent on a connection the server is closing
            # comes back as "connection reset", which a loaded machine makes frequent.
            return rg.Argilla(
                api_url=url,
                api_key=key,
                timeout=30,
                retries=1,
                limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
            )
    except ArgillaCredentialsError:
        raise ReviewError(f"Argilla at {url} rejected the API key") from None
    # the SDK's first call is GET /api/v1/me: whatever else answers it is not Argilla
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise not_argilla(url, shorten(exc)) from None
    except ArgillaAPIError as exc:
        raise not_argilla(url, f"HTTP {exc.status_code} for /api/v1/me") from None
    except ValidationError:
        raise not_argilla(url, "its /api/v1/me answer is not an Argilla user") from None
    except ValueError:  # json.JSONDecodeError: an HTML page, say
        raise not_argilla(url, "its /api/v1/me answer is not JSON") from None


@contextmanager
def quiet_sdk() -> Iterator[None]:
    """The SDK's progress bars and warnings would bury our one-line report."""
    import logging
    import warnings

    import argilla.records._dataset_records as records_module

    logger = logging.getLogger("argilla.sdk")
    level = logger.level
    bar = records_module.tqdm  # read when imported, so TQDM_DISABLE set now would do nothing
    records_module.tqdm = functools.partial(bar, disable=True)  # type: ignore[assignment]
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)
        records_module.tqdm = bar


@contextmanager
def argilla_errors(api_url: str) -> Iterator[None]:
    """SDK and transport failures mid-way as one-line :class:`ReviewError` s."""
    import httpx
    from argilla._exceptions import ArgillaError

    try:
        yield
    except httpx.TransportError as exc:
        raise ArgillaUnreachable(
            f"lost Argilla at {api_url} ({shorten(exc)}): is `prefdelta review serve` still running?"
        ) from None
    except ArgillaError as exc:
        raise ReviewError(f"Argilla at {api_url}: {shorten(exc)}") from None
    except httpx.HTTPStatusError as exc:  # a raw request the SDK does not wrap
        raise ReviewError(
            f"Argilla at {api_url}: HTTP {exc.response.status_code} for {exc.request.url.path}"
        ) from None


def default_dataset_name(dataset: str | os.PathLike[str]) -> str:
    """The Argilla dataset for a published dataset, named by what the dataset is, never by
    how its path is spelled: a Hub id ``org/name`` -> ``org-name-review``; a local folder
    -> ``<recipe name>-<recipe hash12>-review`` from its ``recipe.yaml`` (``out/x``,
    ``./out/x`` and ``/abs/out/x`` are one dataset), or the folder's own name when it has
    no readable recipe."""
    from prefdelta.locations import is_local_path

    if not is_local_path(dataset):
        return f"{_slug(str(dataset))}-review"
    folder = Path(dataset).expanduser().resolve()
    try:
        from prefdelta.push.build_folder import read_recipe_text
        from prefdelta.schema import RECIPE_FILE

        text = (folder / RECIPE_FILE).read_text(encoding="utf-8")
        recipe = read_recipe_text(text, str(folder / RECIPE_FILE))
    except (OSError, UnicodeDecodeError, PrefdeltaError):
        return f"{_slug(folder.name)}-review"
    return f"{_slug(recipe.name)}-{recipe.content_hash()[:12]}-review"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.rstrip("/").lower()).strip("-") or "dataset"


def get_workspace(client: rg.Argilla, name: str, *, create: bool) -> rg.Workspace:
    """The workspace, created (and joined, so the UI lists it) when asked."""
    import argilla as rg
    from argilla._exceptions import ConflictError

    with quiet_sdk():
        workspace = client.workspaces(name)
    if workspace is None:
        if not create:
            raise ReviewError(f"no workspace {name!r} in Argilla at {client.api_url}")
        workspace = rg.Workspace(name=name, client=client).create()
    if create:
        with suppress(ConflictError):  # already a member
            workspace.add_user(client.me)
    return workspace


def get_dataset(client: rg.Argilla, name: str, workspace: str) -> rg.Dataset | None:
    with quiet_sdk():
        return client.datasets(name=name, workspace=workspace)


def shorten(value: object) -> str:
    """``value`` as one line of at most 200 characters, for an error message."""
    text = " ".join(str(value).split())
    return text if len(text) <= 200 else text[:197] + "..."
