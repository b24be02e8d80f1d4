"""Tests of the `taskbox` guest library on the host's CPython, against bindings that
`componentize-py bindings` generates for the contract, with the host's functions replaced.

    python3 -m unittest discover -s guests/python/tests    # needs componentize-py on PATH
"""

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
BINDINGS = tempfile.TemporaryDirectory()
subprocess.run(
    ["componentize-py", "-d", str(HERE / "../../../wit"), "-w", "task", "bindings", BINDINGS.name],
    check=True,
    capture_output=True,
)
sys.path[:0] = [BINDINGS.name, str(HERE.parent)]

from componentize_py_types import Err  # noqa: E402
from wit_world.imports import config as wit_config  # noqa: E402
from wit_world.imports import events as wit_events  # noqa: E402
from wit_world.imports import jobs as wit_jobs  # noqa: E402
from wit_world.imports import log as wit_log  # noqa: E402
from wit_world.imports import sql as wit_sql  # noqa: E402
from wit_world.imports import wasi_http_types as wit_http  # noqa: E402
from wit_world.imports.taskbox_task_types import (  # noqa: E402
    JobInfo,
    TaskError_Fatal,
    TaskError_Retryable,
)

import taskbox  # noqa: E402
from taskbox import Fatal, Retry, config, events, http, jobs, sql, task  # noqa: E402

INFO = JobInfo("default-0f", "t", 1, 3, "default", 1_000, 31_000)


@task
def echo(input):
    return input


@task("with-job")
def with_job(input, job):
    return {"id": job.id, "attempt": job.attempt, "left": job.has_attempts_left()}


@task
def raises(input):
    raise {
        "retry": Retry("later", after_ms=500),
        "fatal": Fatal("never"),
        "bug": KeyError("missing"),
        "unavailable": sql.SqlError("unavailable", "connection refused"),
        "denied": sql.SqlError("denied", "self"),
    }[input]


@task
def unencodable(input):
    return {1, 2}


def run(name: str, input: bytes = b"null"):
    """Runs a task through the export, as the host would; returns output or the task-error."""
    with mock.patch.object(wit_log, "write"):
        try:
            return taskbox.WitWorld().run(name, input, INFO)
        except Err as err:
            return err.value


class Dispatch(unittest.TestCase):
    def test_json_in_json_out(self):
        self.assertEqual(run("echo", b'{"x": [1, 2]}'), b'{"x": [1, 2]}')

    def test_empty_input_is_none(self):
        self.assertEqual(run("echo", b""), b"null")

    def test_the_job_is_passed_to_tasks_that_take_it(self):
        self.assertEqual(
            run("with-job"), b'{"id": "default-0f", "attempt": 1, "left": true}'
        )

    def test_an_unknown_task_names_the_tasks_there_are(self):
        error = run("nope")
        self.assertIsInstance(error, TaskError_Fatal)
        self.assertIn("no task `nope`", error.value)
        self.assertIn("`echo`, `raises`, `unencodable`, `with-job`", error.value)

    def test_input_that_is_not_json_is_fatal(self):
        error = run("echo", b"{")
        self.assertIsInstance(error, TaskError_Fatal)
        self.assertIn("the input is not JSON", error.value)

    def test_output_that_is_not_json_is_fatal(self):
        error = run("unencodable")
        self.assertIsInstance(error, TaskError_Fatal)
        self.assertIn("not JSON-serialisable", error.value)

    def test_retry_is_retryable_with_its_delay(self):
        error = run("raises", b'"retry"')
        self.assertIsInstance(error, TaskError_Retryable)
        self.assertEqual((error.value.message, error.value.retry_after_ms), ("later", 500))

    def test_fatal_is_fatal(self):
        self.assertEqual(run("raises", b'"fatal"'), TaskError_Fatal("never"))

    def test_other_exceptions_are_fatal_with_the_traceback_logged(self):
        with mock.patch.object(wit_log, "write") as write:
            with self.assertRaises(Err) as caught:
                taskbox.WitWorld().run("raises", b'"bug"', INFO)
        self.assertEqual(caught.exception.value, TaskError_Fatal("KeyError: 'missing'"))
        level, message = write.call_args.args
        self.assertEqual(level, wit_log.Level.ERROR)
        self.assertIn("Traceback", message)

    def test_capability_errors_retry_only_when_unavailable(self):
        self.assertIsInstance(run("raises", b'"unavailable"'), TaskError_Retryable)
        self.assertEqual(run("raises", b'"denied"'), TaskError_Fatal("SqlError: denied: self"))

    def test_two_tasks_may_not_share_a_name(self):
        with self.assertRaises(ValueError):
            task("echo")(lambda input: input)


class Sql(unittest.TestCase):
    def test_values_map_both_ways(self):
        rows = wit_sql.Rows(
            ["n", "x", "t", "b", "z"],
            [[wit_sql.Value_Integer(1), wit_sql.Value_Real(0.5), wit_sql.Value_Text("a"),
              wit_sql.Value_Blob(b"\x00"), wit_sql.Value_Null()]],
        )
        with mock.patch.object(wit_sql, "query", return_value=rows) as query:
            result = sql.query("self", "SELECT ?", [None, True, 7, 0.5, "a", b"\x00"])
        self.assertEqual(result, [{"n": 1, "x": 0.5, "t": "a", "b": b"\x00", "z": None}])
        self.assertEqual(
            query.call_args.args[2],
            [wit_sql.Value_Null(), wit_sql.Value_Integer(1), wit_sql.Value_Integer(7),
             wit_sql.Value_Real(0.5), wit_sql.Value_Text("a"), wit_sql.Value_Blob(b"\x00")],
        )

    def test_query_rows_keeps_columns_and_tuples(self):
        rows = wit_sql.Rows(["a", "a"], [[wit_sql.Value_Integer(1), wit_sql.Value_Integer(2)]])
        with mock.patch.object(wit_sql, "query", return_value=rows):
            result = sql.query_rows("self", "SELECT 1, 2")
        self.assertEqual(result, sql.Rows(["a", "a"], [(1, 2)]))

    def test_batch_takes_text_or_pairs(self):
        with mock.patch.object(wit_sql, "batch", return_value=[0, 1]) as batch:
            changed = sql.batch("self", ["CREATE TABLE t (x)", ("INSERT INTO t VALUES (?)", [1])])
        self.assertEqual(changed, [0, 1])
        self.assertEqual(
            batch.call_args.args[1],
            [wit_sql.Statement("CREATE TABLE t (x)", []),
             wit_sql.Statement("INSERT INTO t VALUES (?)", [wit_sql.Value_Integer(1)])],
        )

    def test_errors_are_catchable_with_their_kind(self):
        error = Err(wit_sql.Error_TooLarge("max_rows"))
        with mock.patch.object(wit_sql, "execute", side_effect=error):
            with self.assertRaises(sql.SqlError) as caught:
                sql.execute("self", "DELETE FROM t")
        caught = caught.exception
        self.assertEqual((caught.kind, caught.detail), ("too-large", "max_rows"))
        self.assertEqual(str(caught), "too-large: max_rows")
        self.assertFalse(caught.retryable)

    def test_a_timeout_has_no_detail(self):
        with mock.patch.object(wit_sql, "execute", side_effect=Err(wit_sql.Error_Timeout())):
            with self.assertRaises(sql.SqlError) as caught:
                sql.execute("self", "SELECT 1")
        self.assertEqual(str(caught.exception), "timeout")

    def test_values_sql_cannot_hold_are_refused(self):
        with self.assertRaises(ValueError):
            sql.execute("self", "SELECT ?", [2**63])
        with self.assertRaises(TypeError):
            sql.execute("self", "SELECT ?", [[1]])


class Capabilities(unittest.TestCase):
    def test_events_send_text_as_is_and_the_rest_as_json(self):
        with mock.patch.object(wit_events, "publish") as publish:
            events.publish("c", "e", "raw")
            events.publish("c", "e", {"a": 1})
        self.assertEqual([c.args[2] for c in publish.call_args_list], ["raw", '{"a": 1}'])

    def test_event_errors_name_their_kind(self):
        error = Err(wit_events.Error_InvalidChannel("job:1 is the host's"))
        with mock.patch.object(wit_events, "publish", side_effect=error):
            with self.assertRaises(events.EventError) as caught:
                events.publish("job:1", "e", "x")
        self.assertEqual(caught.exception.kind, "invalid-channel")

    def test_enqueue_sends_json_and_options(self):
        with mock.patch.object(wit_jobs, "enqueue", return_value="default-1") as enqueue:
            job_id = jobs.enqueue("m/t", {"a": 1}, priority="high", delay_ms=5)
        self.assertEqual(job_id, "default-1")
        target, input, options = enqueue.call_args.args
        self.assertEqual((target, input), ("m/t", b'{"a": 1}'))
        self.assertEqual(
            options, wit_jobs.EnqueueOptions(None, wit_jobs.Priority.HIGH, 5, None, None)
        )
        with self.assertRaises(ValueError):
            jobs.enqueue("t", priority="urgent")

    def test_config_require_names_the_missing_key(self):
        with mock.patch.object(wit_config, "get", return_value=None):
            self.assertEqual(config.get("k", "fallback"), "fallback")
            with self.assertRaises(Fatal) as caught:
                config.require("token")
        self.assertIn("`token`", caught.exception.message)


class Http(unittest.TestCase):
    def test_urls_split_into_scheme_authority_and_path(self):
        cases = {
            "https://api.test": ("api.test", "/"),
            "http://api.test:8080/a/b?c=d": ("api.test:8080", "/a/b?c=d"),
            "https://api.test?q=1": ("api.test", "/?q=1"),
        }
        for url, expected in cases.items():
            _, authority, path = http._split(url)
            self.assertEqual((authority, path), expected, url)

    def test_other_schemes_are_refused(self):
        with self.assertRaises(http.HttpError) as caught:
            http.get("ftp://files.test/x")
        self.assertEqual(caught.exception.kind, "invalid-url")

    def test_error_codes_classify_into_denied_invalid_and_failed(self):
        denied = http._classify(wit_http.ErrorCode_HttpRequestDenied())
        self.assertEqual(
            (denied.kind, denied.detail, denied.retryable), ("denied", "HttpRequestDenied", False)
        )
        invalid = http._classify(wit_http.ErrorCode_HttpRequestUriInvalid())
        self.assertEqual(invalid.kind, "invalid-url")
        failed = http._classify(wit_http.ErrorCode_ConnectionTimeout())
        self.assertEqual((failed.kind, failed.retryable), ("failed", True))


if __name__ == "__main__":
    unittest.main()
