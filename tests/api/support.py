"""A job queue double for the API tests, passed in with ``create_app(queue=...)``."""

from __future__ import annotations

from collections.abc import Callable

from api.queue import JobQueue


class RecordingQueue:
    """Records the job ids the app sends; forwards them to ``forward_to`` when one is given.

    ``on_send(job_id, kind)`` runs first (a check at the moment of sending, or a ``pytest.fail``).
    Without ``forward_to`` nothing reaches a broker, which answers as reachable and empty.
    """

    def __init__(self, forward_to: JobQueue | None = None,
                 on_send: Callable[[str, str], None] | None = None) -> None:
        self.forward_to = forward_to
        self.on_send = on_send
        self.sent: list[str] = []

    def enqueue(self, job_id: str, kind: str) -> bool:
        if self.on_send is not None:
            self.on_send(job_id, kind)
        self.sent.append(job_id)
        return True if self.forward_to is None else self.forward_to.enqueue(job_id, kind)

    def reachable(self, timeout: float = 1.0) -> bool:
        return True if self.forward_to is None else self.forward_to.reachable(timeout)

    def depth(self) -> int | None:
        return 0 if self.forward_to is None else self.forward_to.depth()
