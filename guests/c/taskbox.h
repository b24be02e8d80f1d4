/*
 * taskbox.h: write taskbox task modules in C.
 *
 * A task is a function from the job's input (JSON text, NUL-terminated) to output bytes
 * written into a taskbox_buf, returning taskbox_ok(), taskbox_retryable(...) or
 * taskbox_fatal(...). TASKBOX_TASKS lists the module's tasks by name; the library exports
 * the world's `run` and calls the task the job names.
 *
 *     #include "taskbox.h"
 *
 *     static taskbox_result greet(const taskbox_job *job, const char *input, size_t input_len,
 *                                 taskbox_buf *output) {
 *         char *name = taskbox_json_string(input, "name");
 *         if (name == NULL) {
 *             return taskbox_fatal("`name` is missing");
 *         }
 *         taskbox_log(TASKBOX_INFO, "greeting %s in job %s", name, job->id);
 *         taskbox_buf_append_str(output, "{\"message\":");
 *         taskbox_buf_append_json_string(output, name);
 *         taskbox_buf_append_str(output, "}");
 *         free(name);
 *         return taskbox_ok();
 *     }
 *
 *     TASKBOX_TASKS({"greet", greet});
 *
 * Every capability call returns a taskbox_result too, already classified the way the host
 * means it (an unavailable backend is retryable, a denial is fatal), so a task can pass it
 * on with TASKBOX_TRY. Strings returned to the caller are malloc'd and NUL-terminated: free
 * them. The sandbox is fresh for every job, so a task that forgets is no leak across jobs.
 */

#ifndef TASKBOX_H
#define TASKBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- Jobs, results and tasks ---------------------------------------------------------- */

/* What the host tells a task about the job it runs. */
typedef struct taskbox_job {
    const char *id;          /* the job id */
    const char *task;        /* the task name */
    uint32_t attempt;        /* which attempt this is, from 1 */
    uint32_t max_attempts;   /* how many attempts the job may have in all */
    const char *queue;       /* the queue the job came from */
    uint64_t enqueued_at_ms; /* when it was enqueued, ms since the Unix epoch */
    uint64_t deadline_ms;    /* when the host stops this attempt, ms since the Unix epoch */
} taskbox_job;

/* How a task, or a capability call, ended. */
typedef enum taskbox_status {
    TASKBOX_OK,        /* it worked */
    TASKBOX_RETRYABLE, /* a transient failure: the host retries while attempts are left */
    TASKBOX_FATAL,     /* a permanent failure: the job goes to the dead letters */
} taskbox_status;

/* A status with its message (malloc'd; NULL when ok) and, for a retryable failure, the
 * earliest retry in milliseconds from now (negative: the host's backoff decides). */
typedef struct taskbox_result {
    taskbox_status status;
    char *message;
    int64_t retry_after_ms;
} taskbox_result;

/* Success. */
taskbox_result taskbox_ok(void);
/* A transient failure; the message is printf-formatted. The host's backoff picks the delay. */
taskbox_result taskbox_retryable(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* A transient failure to retry no sooner than `after_ms` milliseconds from now. */
taskbox_result taskbox_retryable_after(uint64_t after_ms, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* A permanent failure; the message is printf-formatted. */
taskbox_result taskbox_fatal(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* Frees a result's message (for results a task handles instead of returning). */
void taskbox_result_free(taskbox_result *result);

/* Returns from the calling function with `expr`'s result unless it is TASKBOX_OK. */
#define TASKBOX_TRY(expr)                                                                    \
    do {                                                                                     \
        taskbox_result taskbox_try_result_ = (expr);                                         \
        if (taskbox_try_result_.status != TASKBOX_OK) {                                      \
            return taskbox_try_result_;                                                      \
        }                                                                                    \
    } while (0)

/* A growable byte buffer: a task's output, an HTTP body. `data` is kept NUL-terminated (the
 * NUL is not counted in `len`), so text can be read straight from it. */
typedef struct taskbox_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} taskbox_buf;

/* Appends `len` bytes. */
void taskbox_buf_append(taskbox_buf *buf, const void *bytes, size_t len);
/* Appends a NUL-terminated string. */
void taskbox_buf_append_str(taskbox_buf *buf, const char *text);
/* Appends printf-formatted text. */
void taskbox_buf_printf(taskbox_buf *buf, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends `text` as a JSON string literal, quoted and escaped. */
void taskbox_buf_append_json_string(taskbox_buf *buf, const char *text);
/* Frees the buffer's bytes and empties it. */
void taskbox_buf_free(taskbox_buf *buf);

/* A task: reads `input` (the job's input, NUL-terminated; `input_len` bytes without the
 * NUL), writes its output into `output`, and says how it went. The output is discarded when
 * the task fails. */
typedef taskbox_result (*taskbox_task_fn)(const taskbox_job *job, const char *input,
                                          size_t input_len, taskbox_buf *output);

/* One entry of the module's task table. */
typedef struct taskbox_task {
    const char *name;
    taskbox_task_fn fn;
} taskbox_task;

/* The module's tasks, ended by an entry whose name is NULL. TASKBOX_TASKS defines it. */
extern const taskbox_task taskbox_tasks[];

/* Defines the module's tasks: TASKBOX_TASKS({"greet", greet}, {"noop", noop}); once per
 * module. A job for another name fails (fatal) with a message naming these. */
#define TASKBOX_TASKS(...) const taskbox_task taskbox_tasks[] = {__VA_ARGS__, {NULL, NULL}}

/* ---- Reading JSON input --------------------------------------------------------------- */

/* The member `key` of the JSON object `json` as a string (decoded, malloc'd), or NULL when
 * `json` is not an object, has no such member, or the member is not a string. Only the
 * object's own members are searched, not nested ones. */
char *taskbox_json_string(const char *json, const char *key);
/* The member `key` of the JSON object `json` as a number into `*number`; false when there
 * is no such member or it is not a number. */
bool taskbox_json_number(const char *json, const char *key, double *number);

/* ---- Log and progress ----------------------------------------------------------------- */

/* How important a log line is. */
typedef enum taskbox_level {
    TASKBOX_TRACE,
    TASKBOX_DEBUG,
    TASKBOX_INFO,
    TASKBOX_WARN,
    TASKBOX_ERROR,
} taskbox_level;

/* Appends one printf-formatted line to the job's log. (stdout and stderr go there too.) */
void taskbox_log(taskbox_level level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Reports progress: `percent` (clamped to 100) and a printf-formatted message. The host
 * keeps the latest report on the job and publishes it on channel `job:{id}`. */
void taskbox_progress(uint8_t percent, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Events (capability `event_channels`) --------------------------------------------- */

/* Publishes `data` as an event named `event` on `channel`. Fails fatal when denied or
 * invalid, retryable when the event backend is unavailable. */
taskbox_result taskbox_events_publish(const char *channel, const char *event, const char *data);

/* ---- SQL (capability `sql`) ----------------------------------------------------------- */

/* The type of an SQL value. */
typedef enum taskbox_value_kind {
    TASKBOX_NULL,
    TASKBOX_INTEGER,
    TASKBOX_REAL,
    TASKBOX_TEXT,
    TASKBOX_BLOB,
} taskbox_value_kind;

/* One SQL value: a parameter or a cell of a result row. Text is NUL-terminated in rows;
 * `len` is its length in bytes (for a parameter, TASKBOX_SQL_TEXT measures it). */
typedef struct taskbox_value {
    taskbox_value_kind kind;
    int64_t integer;
    double real;
    const char *text;
    const uint8_t *blob;
    size_t len;
} taskbox_value;

/* Parameter values, for the `params` arrays of the SQL calls. */
#define TASKBOX_SQL_NULL ((taskbox_value){.kind = TASKBOX_NULL})
#define TASKBOX_SQL_INTEGER(v) ((taskbox_value){.kind = TASKBOX_INTEGER, .integer = (v)})
#define TASKBOX_SQL_REAL(v) ((taskbox_value){.kind = TASKBOX_REAL, .real = (v)})
#define TASKBOX_SQL_TEXT(s) ((taskbox_value){.kind = TASKBOX_TEXT, .text = (s), .len = strlen(s)})
#define TASKBOX_SQL_BLOB(p, n) ((taskbox_value){.kind = TASKBOX_BLOB, .blob = (p), .len = (n)})

/* The rows a query returned: `values` holds `row_count` rows of `column_count` values. */
typedef struct taskbox_rows {
    size_t column_count;
    char **columns;
    size_t row_count;
    taskbox_value *values;
} taskbox_rows;

/* The value in row `row` (from 0) of column `column`, or NULL when there is no such row or
 * column. It lives as long as `rows`. */
const taskbox_value *taskbox_rows_get(const taskbox_rows *rows, size_t row, const char *column);
/* Frees the rows. */
void taskbox_rows_free(taskbox_rows *rows);

/* Runs a statement that returns rows, on database `db` ("self" is the module's own SQLite),
 * binding `params` to the placeholders (`?` for SQLite, `$1` for PostgreSQL). On success,
 * `*rows` holds the result (free it with taskbox_rows_free). An unavailable database is
 * retryable; denied, invalid SQL, too large and timeout are fatal. */
taskbox_result taskbox_sql_query(const char *db, const char *sql, const taskbox_value *params,
                                 size_t param_count, taskbox_rows *rows);
/* Runs a statement and stores how many rows it changed in `*changed` (may be NULL). */
taskbox_result taskbox_sql_execute(const char *db, const char *sql, const taskbox_value *params,
                                   size_t param_count, uint64_t *changed);

/* ---- Jobs (capability `enqueue`) ------------------------------------------------------ */

/* The priority of an enqueued job. */
typedef enum taskbox_priority {
    TASKBOX_PRIORITY_DEFAULT, /* the target task's setting */
    TASKBOX_PRIORITY_HIGH,
    TASKBOX_PRIORITY_NORMAL,
    TASKBOX_PRIORITY_LOW,
} taskbox_priority;

/* How to enqueue a job; a zeroed struct (or NULL) leaves everything to the host. */
typedef struct taskbox_enqueue_options {
    const char *queue;           /* NULL: the default queue */
    taskbox_priority priority;
    uint64_t delay_ms;           /* 0: run as soon as possible */
    bool set_max_retries;        /* false: the target task's retry policy */
    uint32_t max_retries;        /* retries after the first attempt, if set_max_retries */
    const char *idempotency_key; /* NULL: none */
} taskbox_enqueue_options;

/* Enqueues `task` (a task of this module, or `MODULE/TASK`) with `input` (JSON text) and
 * stores the new job's id in `*job_id` (malloc'd; may be NULL). The new job records this one
 * as its parent. */
taskbox_result taskbox_jobs_enqueue(const char *task, const char *input,
                                    const taskbox_enqueue_options *options, char **job_id);

/* ---- Module settings ------------------------------------------------------------------ */

/* The operator's setting or secret `key` for this module (malloc'd), or NULL if unset. */
char *taskbox_config_get(const char *key);

/* ---- Outbound HTTP (capability `allowed_outbound_hosts`) ------------------------------ */

/* One header of a request or response. */
typedef struct taskbox_header {
    const char *name;
    const char *value;
} taskbox_header;

/* A response: status, headers (names lowercase) and the whole body (NUL-terminated). */
typedef struct taskbox_response {
    uint16_t status;
    size_t header_count;
    taskbox_header *headers;
    taskbox_buf body;
} taskbox_response;

/* Sends a request and reads the whole response into `*response` (free it with
 * taskbox_response_free). `url` is http(s)://host[:port][/path][?query]; redirects are not
 * followed. A refusal by the host (not granted, internal address, request cap) or a bad URL
 * is fatal; network failures and timeouts are retryable. An HTTP error status is not a
 * failure here: check `response->status`. */
taskbox_result taskbox_http_request(const char *method, const char *url,
                                    const taskbox_header *headers, size_t header_count,
                                    const void *body, size_t body_len,
                                    taskbox_response *response);
/* GET `url`. */
taskbox_result taskbox_http_get(const char *url, taskbox_response *response);
/* POST `body` (NUL-terminated) to `url` with the given content type. */
taskbox_result taskbox_http_post(const char *url, const char *content_type, const char *body,
                                 taskbox_response *response);
/* The first value of header `name` (case-insensitive), or NULL. */
const char *taskbox_response_header(const taskbox_response *response, const char *name);
/* Frees a response. */
void taskbox_response_free(taskbox_response *response);

#endif
