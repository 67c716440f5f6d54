"""Dependencies as ``Annotated`` aliases: the app state, its queue, a session, the caller, owned resources.

Loaders of owned resources (``OwnedJob``, ``OwnedDataset``, ``OwnedGenotype``) answer 404
both for a missing id and for another user's: existence is never revealed (no 403).

The caller is named by ``Authorization: Bearer <key>``, or, for GET and HEAD only, by the
dashboard's HttpOnly cookie ``thrifty_key`` (``api.web``), so that the pages' ``<img>`` plots
and artefact links load. A cookie never authenticates a request that changes state: the
dashboard's own forms check a CSRF token, the JSON API takes the header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import NotFound, Unauthorized
from api.queue import JobQueue
from api.state import AppState
from store.datasets import get_dataset
from store.history import get_genotype
from store.jobs import get_job
from store.models import Dataset, Genotype, Job, User
from store.settings import Settings
from store.users import authenticate

REALM = "thrifty-nas"
SESSION_COOKIE = "thrifty_key"  # the dashboard's login cookie: the API key itself (HttpOnly, SameSite=Strict)
COOKIE_METHODS = frozenset({"GET", "HEAD"})


async def get_state(request: Request) -> AppState:
    # async (no I/O): plain `def` dependencies each cost a thread-pool hop per request
    return request.app.state.api  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


async def get_app_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_queue(state: StateDep) -> JobQueue:
    """The app's queue (``create_app(queue=...)``, else built from the settings): never a module global."""
    return state.queue


QueueDep = Annotated[JobQueue, Depends(get_queue)]


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """One session per request; routes commit what they change, anything unfinished is rolled back.

    Creating a Session does no I/O (it connects on first use), so only the close, which
    returns the connection to the pool, goes to the thread pool.
    """
    session = state.sessionmaker()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(session.rollback)
        raise
    finally:
        await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]

bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer tnas_...`")


def current_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    key = credentials.credentials if credentials is not None else None
    if key is None and request.method in COOKIE_METHODS:
        key = request.cookies.get(SESSION_COOKIE)
    if key is None:
        raise Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <your key>'",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
        )
    user = authenticate(session, key, pepper=settings.api_key_pepper.get_secret_value())
    if user is None:
        raise Unauthorized(
            "invalid API key: it is unknown or was revoked; ask for a new key",
            code="invalid_api_key",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="any unique printable string (e.g. a UUID): a retried submit with the same key and body "
        "returns the first job (header Idempotent-Replayed: true); the same key with another body is 409",
    ),
]

def cursor_query(description: str = "next_cursor of the previous page; omit it for the first page") -> Any:
    """A page cursor: an opaque token of this service, never empty (an empty one is 422, as the schema says).

    A non-empty token this service did not issue is 400 ``invalid_cursor`` (documented).
    """
    return Query(min_length=1, description=description)


ID_PATTERN = r"^[A-Za-z0-9_-]+$"  # ids are `<prefix>_<32 hex>` (store.types.new_id); anything else is 422
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="a job id, e.g. job_3f2a...")]


def owned_job(job_id: JobId, session: SessionDep, user: CurrentUser) -> Job:
    job = get_job(session, job_id, owner_id=user.id)
    if job is None:
        raise NotFound.of("job", job_id)
    return job


def owned_dataset(
    dataset_id: Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)],
    session: SessionDep,
    user: CurrentUser,
) -> Dataset:
    dataset = get_dataset(session, dataset_id, owner_id=user.id)
    if dataset is None:
        raise NotFound.of("dataset", dataset_id)
    return dataset


def owned_genotype(
    genotype_id: Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)],
    session: SessionDep,
    user: CurrentUser,
) -> Genotype:
    row = get_genotype(session, genotype_id, owner_id=user.id)
    if row is None:
        raise NotFound.of("genotype", genotype_id)
    return row


OwnedJob = Annotated[Job, Depends(owned_job)]
OwnedDataset = Annotated[Dataset, Depends(owned_dataset)]
OwnedGenotype = Annotated[Genotype, Depends(owned_genotype)]
