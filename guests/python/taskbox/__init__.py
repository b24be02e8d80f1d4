"""Write taskbox task modules in Python.

A task is a function from the job's input, decoded from JSON, to anything JSON can encode.
It may take the `Job` as a second argument. `@task` registers it under its function's
name, `@task("name")` under another:

    from taskbox import Fatal, Job, WitWorld, task

    @task
    def greet(input):
        if not input.get("name"):
            raise Fatal("`name` must not be empty")
        return {"message": f"Hello, {input['name']}!"}

    @task("slow-greet")
    def slow_greet(input, job: Job):
        job.progress(50, "thinking")
        return greet(input)

The module must expose `WitWorld` (import it, as above): it is the component's export, and
runs the task a job names. A task fails by raising `Retry` (the host tries again with
backoff while attempts are left), `Fatal` (never retried), or any other exception (fatal,
with the traceback in the job log). `taskbox.progress(percent, message)` reports progress
(as does `job.progress`). The capabilities live in `taskbox.log`, `taskbox.sql`,
`taskbox.events`, `taskbox.jobs`, `taskbox.config` and `taskbox.http`; an error they raise
and the task does not catch fails the job, retryably when the backend was unavailable.
`print()` writes to the job log.

Build with `guests/python/build.sh APP_DIR` and run the `.wasm` with
`taskbox run FILE.wasm greet --input '{"name":"Ada"}'`.
"""

import inspect
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import wit_world
from componentize_py_types import Err
from wit_world.imports import progress as wit_progress
from wit_world.imports.taskbox_task_types import (
    JobInfo,
    Retry as WitRetry,
    TaskError_Fatal,
    TaskError_Retryable,
)

from . import config, events, http, jobs, log, sql
from .errors import CapabilityError, Fatal, Retry

__all__ = [
    "CapabilityError",
    "Fatal",
    "Job",
    "Retry",
    "WitWorld",
    "config",
    "events",
    "http",
    "jobs",
    "log",
    "progress",
    "sql",
    "task",
]


@dataclass(frozen=True)
class Job:
    """The job a task is running for."""

    #: The job id: the queue's name, `-`, and 32 hex digits.
    id: str
    #: The task name the job was enqueued for.
    task: str
    #: Which attempt this is, from 1.
    attempt: int
    #: How many attempts the job may have in all.
    max_attempts: int
    #: The queue the job came from.
    queue: str
    #: When the job was enqueued, in milliseconds since the Unix epoch.
    enqueued_at_ms: int
    #: When the host stops this attempt, in milliseconds since the Unix epoch.
    deadline_ms: int

    def has_attempts_left(self) -> bool:
        """Whether a `Retry` now would still be retried."""
        return self.attempt < self.max_attempts

    def progress(self, percent: int, message: str = "") -> None:
        """Reports progress: `percent` from 0 to 100 and what is happening."""
        progress(percent, message)


def progress(percent: int, message: str = "") -> None:
    """Records the job's progress: the host keeps the latest report and publishes it on the
    channel `job:{id}`. `percent` is clamped to 0..100.
    """
    wit_progress.report(max(0, min(100, int(percent))), message)


@dataclass(frozen=True)
class _Task:
    function: Callable
    takes_job: bool


_tasks: dict[str, _Task] = {}


def task(name_or_function: str | Callable | None = None, /):
    """Registers a task: `@task` names it after the function, `@task("name")` otherwise.

    The function takes the decoded input, and the `Job` too if it has a second parameter.
    """

    def register(function: Callable, name: str) -> Callable:
        if name in _tasks:
            raise ValueError(f"two tasks are named `{name}`")
        positional = [
            p
            for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        _tasks[name] = _Task(function, takes_job=len(positional) >= 2)
        return function

    if callable(name_or_function):
        return register(name_or_function, name_or_function.__name__)
    return lambda function: register(function, name_or_function or function.__name__)


class WitWorld(wit_world.WitWorld):
    """The component's export: runs the task a job names. Expose it from the app module."""

    def run(self, task: str, input: bytes, job: JobInfo) -> bytes:
        """Decodes the input, calls the task and encodes its output; raises the task's
        failure as the WIT `task-error`.
        """
        try:
            return _run(task, input, job)
        except Retry as retry:
            raise Err(TaskError_Retryable(WitRetry(retry.message, retry.after_ms))) from None
        except Fatal as fatal:
            raise Err(TaskError_Fatal(fatal.message)) from None
        except CapabilityError as error:
            if error.retryable:
                raise Err(TaskError_Retryable(WitRetry(str(error), None))) from None
            raise Err(TaskError_Fatal(f"{type(error).__name__}: {error}")) from None
        except Exception as error:
            log.error(traceback.format_exc().rstrip())
            raise Err(TaskError_Fatal(f"{type(error).__name__}: {error}")) from None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()


def _run(name: str, input: bytes, info: JobInfo) -> bytes:
    registered = _tasks.get(name)
    if registered is None:
        names = ", ".join(f"`{n}`" for n in sorted(_tasks)) or "none"
        raise Fatal(f"this module has no task `{name}` (its tasks: {names})")
    try:
        value = json.loads(input) if input else None
    except ValueError as error:
        raise Fatal(f"the input is not JSON: {error}") from None
    if registered.takes_job:
        job = Job(
            id=info.id,
            task=info.task,
            attempt=info.attempt,
            max_attempts=info.max_attempts,
            queue=info.queue,
            enqueued_at_ms=info.enqueued_at,
            deadline_ms=info.deadline,
        )
        output = registered.function(value, job)
    else:
        output = registered.function(value)
    try:
        return json.dumps(output).encode()
    except (TypeError, ValueError) as error:
        raise Fatal(f"the output is not JSON-serialisable: {error}") from None


def _warm_up() -> None:
    """Runs this library's part of a job a few times while the component is pre-initialised
    at build time: CPython specialises bytecode and fills its caches as code runs, and what
    is done before the snapshot is not done again by every job. The task is the library's
    own; no task of the module runs here.
    """
    name = "\0warm-up"
    _tasks[name] = _Task(lambda value, job: {"value": value, "attempt": job.attempt}, True)
    info = JobInfo("warm-up", name, 1, 1, "warm-up", 0, 0)
    try:
        for _ in range(8):
            WitWorld().run(name, b'{"warm": [1, "up", true, null, 1.5]}', info)
    finally:
        del _tasks[name]


_warm_up()
