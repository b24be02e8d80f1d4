"""The Python example module: one task per capability, and `noop` for benchmarks.

- `noop` returns its input: the cost of a Python job and nothing else.
- `fetch` GETs `url` (or POSTs `json` to it) and describes the response; a network failure
  or a 5xx is retried.
- `note` writes a note to the module's own SQLite database and reads it back.
- `announce` publishes `message` on the channel `example:{topic}`.
- `probe` calls each capability once and reports which of them answered: it shows how the
  errors of a capability that is not granted look when caught.
"""

from taskbox import Fatal, Job, Retry, WitWorld, events, http, jobs, log, sql, task

__all__ = ["WitWorld"]

SCHEMA = """CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    job TEXT NOT NULL
)"""


@task
def noop(input):
    """Returns its input."""
    return input


@task
def fetch(input, job: Job):
    """Sends a GET to `url`, or a POST of `json` when the input has it."""
    url = _require(input, "url")
    try:
        if "json" in input:
            response = http.post(url, json=input["json"])
        else:
            response = http.get(url)
    except http.HttpError as error:
        if error.retryable and job.has_attempts_left():
            raise Retry(str(error), after_ms=1000) from None
        raise
    if response.status >= 500:
        raise Retry(f"{url} answered {response.status}")
    print(f"{url} answered {response.status} with {len(response.body)} bytes")
    return {
        "status": response.status,
        "content_type": response.header("content-type"),
        "bytes": len(response.body),
    }


@task
def note(input, job: Job):
    """Stores `body` as a note and returns the note as read back, with the count so far."""
    body = _require(input, "body")
    sql.batch(
        "self",
        [SCHEMA, ("INSERT INTO notes (body, job) VALUES (?, ?)", [body, job.id])],
    )
    (stored,) = sql.query(
        "self", "SELECT id, body, job FROM notes WHERE job = ? ORDER BY id DESC LIMIT 1", [job.id]
    )
    (count,) = sql.query_rows("self", "SELECT count(*) FROM notes").rows[0]
    return {"note": stored, "notes": count}


@task
def announce(input):
    """Publishes `message` as an `announcement` event on `example:{topic}`."""
    channel = f"example:{_require(input, 'topic')}"
    events.publish(channel, "announcement", {"message": _require(input, "message")})
    log.info(f"announced on {channel}")
    return {"channel": channel}


@task
def probe(input):
    """Calls each capability once; returns `ok` or the error each one raised."""
    calls = {
        "sql": lambda: sql.query("self", "SELECT 1 AS one"),
        "events": lambda: events.publish("example:probe", "probe", "{}"),
        "jobs": lambda: jobs.enqueue("noop", None),
        "http": lambda: http.get((input or {}).get("url", "https://example.com/")),
    }
    report = {}
    for name, call in calls.items():
        try:
            call()
            report[name] = "ok"
        except (sql.SqlError, events.EventError, jobs.EnqueueError, http.HttpError) as error:
            report[name] = {"kind": error.kind, "error": str(error), "retryable": error.retryable}
    return report


def _require(input, key: str):
    if not isinstance(input, dict) or key not in input:
        raise Fatal(f"the input needs `{key}`")
    return input[key]
