"""Enqueues further jobs: chains and fan-out. The manifest grants the targets
(`enqueue = ["thumbnails/*"]`); a child records the job that enqueued it as its parent.

    resize = jobs.enqueue("resize", {"width": 640})
    jobs.enqueue("mailer/notify", {"after": resize}, delay_ms=60_000)
"""

import json

from componentize_py_types import Err
from wit_world.imports import jobs
from wit_world.imports.jobs import EnqueueOptions, Priority

from .errors import CapabilityError

_PRIORITIES = {"high": Priority.HIGH, "normal": Priority.NORMAL, "low": Priority.LOW}


class EnqueueError(CapabilityError):
    """A job was not enqueued. `kind` is `denied` (the target is not granted), `limit` (too
    many jobs enqueued by this job, or too deep a chain), `invalid` (no such task, bad
    options) or `unavailable` (worth a retry).
    """


def enqueue(
    target: str,
    input: object = None,
    *,
    queue: str | None = None,
    priority: str | None = None,
    delay_ms: int | None = None,
    max_retries: int | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Enqueues `target` (`TASK` of this module, or `MODULE/TASK`) with `input` as JSON and
    returns the new job's id. `priority` is `high`, `normal` or `low`; options left out
    take the target task's settings.
    """
    if priority is not None and priority not in _PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of high, normal, low")
    options = EnqueueOptions(
        queue=queue,
        priority=None if priority is None else _PRIORITIES[priority],
        delay_ms=delay_ms,
        max_retries=max_retries,
        idempotency_key=idempotency_key,
    )
    try:
        return jobs.enqueue(target, json.dumps(input).encode(), options)
    except Err as err:
        raise EnqueueError.from_wit(err.value) from None
