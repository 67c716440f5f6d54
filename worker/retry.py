"""Retry a database step while the database is unreachable, with exponential backoff.

A worker holding a finished (or failed) job must not lose hours of training because the
database blinked at the moment it reports the outcome: the step is retried, 0.5 s, 1 s,
2 s, ... up to ``cap`` seconds apart, for up to ``deadline`` seconds; then the error is
raised (the job keeps its lease until it expires, and the reaper re-queues it).

Only errors that mean "the database cannot be reached right now" are retried: a lost or
refused connection (``OperationalError``, an invalidated connection) and an exhausted
pool. A constraint violation or a programming error is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEADLINE_S = 300.0
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0


def transient(exc: BaseException) -> bool:
    """True for an error that says the database is unreachable now (worth retrying)."""
    if isinstance(exc, OperationalError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retry_db(what: str, step: Callable[[], T], *, deadline: float = DEADLINE_S, first: float = FIRST_DELAY_S,
             cap: float = MAX_DELAY_S, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> T:
    """``step()``, run again after a transient database error until ``deadline`` seconds have passed.

    ``step`` must be one whole transaction (e.g. a ``session_scope`` block): a failed try is
    rolled back, so running it again is safe.
    """
    start, delay, tries = clock(), first, 1
    while True:
        try:
            result = step()
        except Exception as exc:
            waited = clock() - start
            if not transient(exc) or waited + delay > deadline:
                raise
            log.warning("%s: the database is unreachable (%s: %s); try %d again in %.1fs",
                        what, exc.__class__.__name__, str(exc).splitlines()[0] if str(exc) else "", tries + 1,
                        delay)
            sleep(delay)
            delay, tries = min(cap, delay * 2), tries + 1
            continue
        if tries > 1:
            log.info("%s: done after %d tries (%.1fs): the database is back", what, tries, clock() - start)
        return result
