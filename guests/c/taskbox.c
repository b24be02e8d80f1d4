/*
 * taskbox.c: the C guest library over the bindings `wit-bindgen c` generates for the world
 * `task` (task.h, task.c, task_component_type.o). See taskbox.h for the interface.
 */

#include "taskbox.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "task.h"

/* ---- Small helpers -------------------------------------------------------------------- */

/* Aborts on a failed allocation: inside a job there is nothing better to do, and the host
 * reports the trap. */
static void *xrealloc(void *ptr, size_t size) {
    void *grown = realloc(ptr, size == 0 ? 1 : size);
    if (grown == NULL) {
        abort();
    }
    return grown;
}

/* A NUL-terminated copy of `len` bytes at `bytes`. */
static char *copy_n(const void *bytes, size_t len) {
    char *copy = xrealloc(NULL, len + 1);
    if (len > 0) {
        memcpy(copy, bytes, len);
    }
    copy[len] = '\0';
    return copy;
}

/* A NUL-terminated copy of a component-model string. */
static char *copy_string(const task_string_t *text) {
    return copy_n(text->ptr, text->len);
}

/* A component-model string that borrows the NUL-terminated `text` (for import calls, which
 * only read their arguments). */
static task_string_t borrow_string(const char *text) {
    return (task_string_t){(uint8_t *)text, strlen(text)};
}

/* printf into a malloc'd string. */
static char *vformat(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(NULL, 0, format, args);
    char *text = xrealloc(NULL, len < 0 ? 1 : (size_t)len + 1);
    vsnprintf(text, len < 0 ? 1 : (size_t)len + 1, format, again);
    va_end(again);
    return text;
}

/* ---- Results -------------------------------------------------------------------------- */

taskbox_result taskbox_ok(void) {
    return (taskbox_result){TASKBOX_OK, NULL, -1};
}

taskbox_result taskbox_retryable(const char *format, ...) {
    va_list args;
    va_start(args, format);
    taskbox_result result = {TASKBOX_RETRYABLE, vformat(format, args), -1};
    va_end(args);
    return result;
}

taskbox_result taskbox_retryable_after(uint64_t after_ms, const char *format, ...) {
    va_list args;
    va_start(args, format);
    taskbox_result result = {TASKBOX_RETRYABLE, vformat(format, args),
                             after_ms > INT64_MAX ? INT64_MAX : (int64_t)after_ms};
    va_end(args);
    return result;
}

taskbox_result taskbox_fatal(const char *format, ...) {
    va_list args;
    va_start(args, format);
    taskbox_result result = {TASKBOX_FATAL, vformat(format, args), -1};
    va_end(args);
    return result;
}

void taskbox_result_free(taskbox_result *result) {
    free(result->message);
    result->message = NULL;
}

/* A failed capability call: "<capability>: <what>[: <detail>]", the detail being a string
 * the host sent (NULL for none). */
static taskbox_result capability_error(taskbox_status status, const char *capability,
                                       const char *what, const task_string_t *detail) {
    taskbox_result result =
        detail == NULL ? taskbox_fatal("%s: %s", capability, what)
                       : taskbox_fatal("%s: %s: %.*s", capability, what, (int)detail->len,
                                       (const char *)detail->ptr);
    result.status = status;
    return result;
}

/* ---- Buffers -------------------------------------------------------------------------- */

/* Makes room for `more` bytes and the NUL after them. */
static void buf_reserve(taskbox_buf *buf, size_t more) {
    if (buf->len + more + 1 <= buf->cap) {
        return;
    }
    size_t cap = buf->cap < 64 ? 64 : buf->cap;
    while (cap < buf->len + more + 1) {
        cap *= 2;
    }
    buf->data = xrealloc(buf->data, cap);
    buf->cap = cap;
}

void taskbox_buf_append(taskbox_buf *buf, const void *bytes, size_t len) {
    buf_reserve(buf, len);
    if (len > 0) {
        memcpy(buf->data + buf->len, bytes, len);
    }
    buf->len += len;
    buf->data[buf->len] = '\0';
}

void taskbox_buf_append_str(taskbox_buf *buf, const char *text) {
    taskbox_buf_append(buf, text, strlen(text));
}

void taskbox_buf_printf(taskbox_buf *buf, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = vformat(format, args);
    va_end(args);
    taskbox_buf_append_str(buf, text);
    free(text);
}

void taskbox_buf_append_json_string(taskbox_buf *buf, const char *text) {
    taskbox_buf_append(buf, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        switch (*p) {
        case '"': taskbox_buf_append(buf, "\\\"", 2); break;
        case '\\': taskbox_buf_append(buf, "\\\\", 2); break;
        case '\n': taskbox_buf_append(buf, "\\n", 2); break;
        case '\r': taskbox_buf_append(buf, "\\r", 2); break;
        case '\t': taskbox_buf_append(buf, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                taskbox_buf_printf(buf, "\\u%04x", *p);
            } else {
                taskbox_buf_append(buf, p, 1);
            }
        }
    }
    taskbox_buf_append(buf, "\"", 1);
}

void taskbox_buf_free(taskbox_buf *buf) {
    free(buf->data);
    *buf = (taskbox_buf){0};
}

/* ---- Reading JSON input --------------------------------------------------------------- */

static const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
        p++;
    }
    return p;
}

/* Skips the string literal at `p` (at its opening quote); NULL if it is not closed. */
static const char *skip_string(const char *p) {
    for (p++; *p != '"'; p++) {
        if (*p == '\0' || (*p == '\\' && *++p == '\0')) {
            return NULL;
        }
    }
    return p + 1;
}

/* Skips the JSON value at `p`; NULL if it is cut short. Objects and arrays are skipped by
 * counting brackets (outside strings), without recursion, so deep nesting is harmless. */
static const char *skip_value(const char *p) {
    if (*p == '"') {
        return skip_string(p);
    }
    if (*p != '{' && *p != '[') {
        while (*p != '\0' && strchr(",}] \t\r\n", *p) == NULL) {
            p++;
        }
        return p;
    }
    size_t depth = 0;
    do {
        if (*p == '"') {
            p = skip_string(p);
            if (p == NULL) {
                return NULL;
            }
            continue;
        }
        if (*p == '\0') {
            return NULL;
        }
        if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            depth--;
        }
        p++;
    } while (depth > 0);
    return p;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The four hex digits at `p` as a number, or -1. */
static long hex4(const char *p) {
    long value = 0;
    for (int i = 0; i < 4; i++) {
        int digit = hex_digit(p[i]);
        if (digit < 0) {
            return -1;
        }
        value = value * 16 + digit;
    }
    return value;
}

/* Appends code point `c` as UTF-8 at `out`; returns the end. */
static char *put_utf8(char *out, unsigned long c) {
    if (c < 0x80) {
        *out++ = (char)c;
    } else if (c < 0x800) {
        *out++ = (char)(0xC0 | c >> 6);
        *out++ = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *out++ = (char)(0xE0 | c >> 12);
        *out++ = (char)(0x80 | (c >> 6 & 0x3F));
        *out++ = (char)(0x80 | (c & 0x3F));
    } else {
        *out++ = (char)(0xF0 | c >> 18);
        *out++ = (char)(0x80 | (c >> 12 & 0x3F));
        *out++ = (char)(0x80 | (c >> 6 & 0x3F));
        *out++ = (char)(0x80 | (c & 0x3F));
    }
    return out;
}

/* Decodes the string literal at `p` (at its opening quote) into a malloc'd string; NULL if
 * it is malformed. A decoded string is never longer than its literal. */
static char *decode_string(const char *p) {
    const char *end = skip_string(p);
    if (end == NULL) {
        return NULL;
    }
    char *text = xrealloc(NULL, (size_t)(end - p));
    char *out = text;
    for (p++; *p != '"'; p++) {
        if (*p != '\\') {
            *out++ = *p;
            continue;
        }
        p++;
        const char *simple = strchr("\"\\/bfnrt", *p);
        if (simple != NULL && *p != '\0') {
            *out++ = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        long c = *p == 'u' ? hex4(p + 1) : -1;
        if (c < 0) {
            free(text);
            return NULL;
        }
        p += 4;
        if (c >= 0xD800 && c < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
            long low = hex4(p + 3);
            if (low >= 0xDC00 && low < 0xE000) {
                c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
        }
        out = put_utf8(out, (unsigned long)c);
    }
    *out = '\0';
    return text;
}

/* The start of member `key`'s value in the JSON object `json`, or NULL. */
static const char *find_member(const char *json, const char *key) {
    const char *p = skip_space(json);
    if (*p != '{') {
        return NULL;
    }
    p = skip_space(p + 1);
    while (*p == '"') {
        char *name = decode_string(p);
        p = skip_string(p);
        if (name == NULL) {
            return NULL;
        }
        bool found = strcmp(name, key) == 0;
        free(name);
        p = skip_space(p);
        if (*p != ':') {
            return NULL;
        }
        p = skip_space(p + 1);
        if (found) {
            return p;
        }
        p = skip_value(p);
        if (p == NULL) {
            return NULL;
        }
        p = skip_space(p);
        if (*p != ',') {
            return NULL;
        }
        p = skip_space(p + 1);
    }
    return NULL;
}

char *taskbox_json_string(const char *json, const char *key) {
    const char *value = find_member(json, key);
    return value != NULL && *value == '"' ? decode_string(value) : NULL;
}

bool taskbox_json_number(const char *json, const char *key, double *number) {
    const char *value = find_member(json, key);
    if (value == NULL || (*value != '-' && (*value < '0' || *value > '9'))) {
        return false;
    }
    char *end;
    double parsed = strtod(value, &end);
    if (*end != '\0' && strchr(",} \t\r\n", *end) == NULL) {
        return false;
    }
    /* strtod also takes what JSON does not, like `0x1p3` and `-inf`. */
    for (const char *p = value; p < end; p++) {
        if (strchr("0123456789+-.eE", *p) == NULL) {
            return false;
        }
    }
    *number = parsed;
    return true;
}

/* ---- Log and progress ----------------------------------------------------------------- */

void taskbox_log(taskbox_level level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = vformat(format, args);
    va_end(args);
    task_string_t message = borrow_string(text);
    taskbox_task_log_write((taskbox_task_log_level_t)level, &message);
    free(text);
}

void taskbox_progress(uint8_t percent, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = vformat(format, args);
    va_end(args);
    task_string_t message = borrow_string(text);
    taskbox_task_progress_report(percent > 100 ? 100 : percent, &message);
    free(text);
}

/* ---- Events --------------------------------------------------------------------------- */

taskbox_result taskbox_events_publish(const char *channel, const char *event, const char *data) {
    task_string_t channel_s = borrow_string(channel), event_s = borrow_string(event),
                  data_s = borrow_string(data);
    taskbox_task_events_error_t err;
    if (taskbox_task_events_publish(&channel_s, &event_s, &data_s, &err)) {
        return taskbox_ok();
    }
    taskbox_result result;
    switch (err.tag) {
    case TASKBOX_TASK_EVENTS_ERROR_DENIED:
        result = capability_error(TASKBOX_FATAL, "events", "denied", &err.val.denied);
        break;
    case TASKBOX_TASK_EVENTS_ERROR_INVALID_CHANNEL:
        result = capability_error(TASKBOX_FATAL, "events", "invalid channel",
                                  &err.val.invalid_channel);
        break;
    case TASKBOX_TASK_EVENTS_ERROR_INVALID_EVENT:
        result = capability_error(TASKBOX_FATAL, "events", "invalid event name",
                                  &err.val.invalid_event);
        break;
    case TASKBOX_TASK_EVENTS_ERROR_TOO_LARGE:
        result = taskbox_fatal("events: too large: the limit is %llu bytes",
                               (unsigned long long)err.val.too_large);
        break;
    default:
        result = capability_error(TASKBOX_RETRYABLE, "events", "unavailable",
                                  &err.val.unavailable);
    }
    taskbox_task_events_error_free(&err);
    return result;
}

/* ---- SQL ------------------------------------------------------------------------------ */

/* The parameters as the WIT type; they borrow the caller's text and blobs. */
static taskbox_task_sql_list_value_t sql_params(const taskbox_value *params, size_t count) {
    taskbox_task_sql_list_value_t list = {xrealloc(NULL, count * sizeof *list.ptr), count};
    for (size_t i = 0; i < count; i++) {
        taskbox_task_sql_value_t *v = &list.ptr[i];
        switch (params[i].kind) {
        case TASKBOX_INTEGER:
            *v = (taskbox_task_sql_value_t){.tag = TASKBOX_TASK_SQL_VALUE_INTEGER,
                                            .val.integer = params[i].integer};
            break;
        case TASKBOX_REAL:
            *v = (taskbox_task_sql_value_t){.tag = TASKBOX_TASK_SQL_VALUE_REAL,
                                            .val.real = params[i].real};
            break;
        case TASKBOX_TEXT:
            *v = (taskbox_task_sql_value_t){.tag = TASKBOX_TASK_SQL_VALUE_TEXT,
                                            .val.text = {(uint8_t *)params[i].text, params[i].len}};
            break;
        case TASKBOX_BLOB:
            *v = (taskbox_task_sql_value_t){.tag = TASKBOX_TASK_SQL_VALUE_BLOB,
                                            .val.blob = {(uint8_t *)params[i].blob, params[i].len}};
            break;
        default:
            *v = (taskbox_task_sql_value_t){.tag = TASKBOX_TASK_SQL_VALUE_NULL};
        }
    }
    return list;
}

/* Maps an SQL error (and frees it): an unavailable database is worth a retry. */
static taskbox_result sql_error(taskbox_task_sql_error_t *err) {
    taskbox_result result;
    switch (err->tag) {
    case TASKBOX_TASK_SQL_ERROR_DENIED:
        result = capability_error(TASKBOX_FATAL, "sql", "denied", &err->val.denied);
        break;
    case TASKBOX_TASK_SQL_ERROR_INVALID:
        result = capability_error(TASKBOX_FATAL, "sql", "invalid", &err->val.invalid);
        break;
    case TASKBOX_TASK_SQL_ERROR_TOO_LARGE:
        result = capability_error(TASKBOX_FATAL, "sql", "too large", &err->val.too_large);
        break;
    case TASKBOX_TASK_SQL_ERROR_TIMEOUT:
        result = capability_error(TASKBOX_FATAL, "sql", "the statement ran past the deadline",
                                  NULL);
        break;
    default:
        result = capability_error(TASKBOX_RETRYABLE, "sql", "unavailable",
                                  &err->val.unavailable);
    }
    taskbox_task_sql_error_free(err);
    return result;
}

/* Converts one value of a result row, copying text and blobs. */
static taskbox_value row_value(const taskbox_task_sql_value_t *v) {
    switch (v->tag) {
    case TASKBOX_TASK_SQL_VALUE_INTEGER:
        return (taskbox_value){.kind = TASKBOX_INTEGER, .integer = v->val.integer};
    case TASKBOX_TASK_SQL_VALUE_REAL:
        return (taskbox_value){.kind = TASKBOX_REAL, .real = v->val.real};
    case TASKBOX_TASK_SQL_VALUE_TEXT:
        return (taskbox_value){.kind = TASKBOX_TEXT, .text = copy_string(&v->val.text),
                               .len = v->val.text.len};
    case TASKBOX_TASK_SQL_VALUE_BLOB:
        return (taskbox_value){.kind = TASKBOX_BLOB,
                               .blob = (const uint8_t *)copy_n(v->val.blob.ptr, v->val.blob.len),
                               .len = v->val.blob.len};
    default:
        return (taskbox_value){.kind = TASKBOX_NULL};
    }
}

taskbox_result taskbox_sql_query(const char *db, const char *sql, const taskbox_value *params,
                                 size_t param_count, taskbox_rows *rows) {
    task_string_t db_s = borrow_string(db), sql_s = borrow_string(sql);
    taskbox_task_sql_list_value_t list = sql_params(params, param_count);
    taskbox_task_sql_rows_t ret;
    taskbox_task_sql_error_t err;
    bool ok = taskbox_task_sql_query(&db_s, &sql_s, &list, &ret, &err);
    free(list.ptr);
    if (!ok) {
        return sql_error(&err);
    }
    size_t columns = ret.columns.len, count = ret.rows.len;
    *rows = (taskbox_rows){columns, xrealloc(NULL, columns * sizeof(char *)), count,
                           xrealloc(NULL, columns * count * sizeof(taskbox_value))};
    for (size_t c = 0; c < columns; c++) {
        rows->columns[c] = copy_string(&ret.columns.ptr[c]);
    }
    for (size_t r = 0; r < count; r++) {
        const taskbox_task_sql_list_value_t *row = &ret.rows.ptr[r];
        for (size_t c = 0; c < columns; c++) {
            rows->values[r * columns + c] =
                c < row->len ? row_value(&row->ptr[c]) : (taskbox_value){.kind = TASKBOX_NULL};
        }
    }
    taskbox_task_sql_rows_free(&ret);
    return taskbox_ok();
}

taskbox_result taskbox_sql_execute(const char *db, const char *sql, const taskbox_value *params,
                                   size_t param_count, uint64_t *changed) {
    task_string_t db_s = borrow_string(db), sql_s = borrow_string(sql);
    taskbox_task_sql_list_value_t list = sql_params(params, param_count);
    uint64_t ret;
    taskbox_task_sql_error_t err;
    bool ok = taskbox_task_sql_execute(&db_s, &sql_s, &list, &ret, &err);
    free(list.ptr);
    if (!ok) {
        return sql_error(&err);
    }
    if (changed != NULL) {
        *changed = ret;
    }
    return taskbox_ok();
}

const taskbox_value *taskbox_rows_get(const taskbox_rows *rows, size_t row, const char *column) {
    if (row >= rows->row_count) {
        return NULL;
    }
    for (size_t c = 0; c < rows->column_count; c++) {
        if (strcmp(rows->columns[c], column) == 0) {
            return &rows->values[row * rows->column_count + c];
        }
    }
    return NULL;
}

void taskbox_rows_free(taskbox_rows *rows) {
    for (size_t c = 0; c < rows->column_count; c++) {
        free(rows->columns[c]);
    }
    for (size_t i = 0; i < rows->row_count * rows->column_count; i++) {
        free((void *)rows->values[i].text);
        free((void *)rows->values[i].blob);
    }
    free(rows->columns);
    free(rows->values);
    *rows = (taskbox_rows){0};
}

/* ---- Jobs ----------------------------------------------------------------------------- */

taskbox_result taskbox_jobs_enqueue(const char *task, const char *input,
                                    const taskbox_enqueue_options *options, char **job_id) {
    static const taskbox_enqueue_options defaults = {0};
    if (options == NULL) {
        options = &defaults;
    }
    taskbox_task_jobs_enqueue_options_t wit = {0};
    if (options->queue != NULL) {
        wit.queue = (task_option_string_t){true, borrow_string(options->queue)};
    }
    if (options->priority != TASKBOX_PRIORITY_DEFAULT) {
        static const taskbox_task_jobs_priority_t priorities[] = {
            [TASKBOX_PRIORITY_HIGH] = TASKBOX_TASK_JOBS_PRIORITY_HIGH,
            [TASKBOX_PRIORITY_NORMAL] = TASKBOX_TASK_JOBS_PRIORITY_NORMAL,
            [TASKBOX_PRIORITY_LOW] = TASKBOX_TASK_JOBS_PRIORITY_LOW,
        };
        wit.priority = (taskbox_task_jobs_option_priority_t){true, priorities[options->priority]};
    }
    if (options->delay_ms > 0) {
        wit.delay_ms = (task_option_u64_t){true, options->delay_ms};
    }
    if (options->set_max_retries) {
        wit.max_retries = (task_option_u32_t){true, options->max_retries};
    }
    if (options->idempotency_key != NULL) {
        wit.idempotency_key = (task_option_string_t){true, borrow_string(options->idempotency_key)};
    }
    task_string_t task_s = borrow_string(task);
    task_list_u8_t input_l = {(uint8_t *)input, strlen(input)};
    task_string_t ret;
    taskbox_task_jobs_error_t err;
    if (taskbox_task_jobs_enqueue(&task_s, &input_l, &wit, &ret, &err)) {
        if (job_id != NULL) {
            *job_id = copy_string(&ret);
        }
        task_string_free(&ret);
        return taskbox_ok();
    }
    taskbox_result result;
    switch (err.tag) {
    case TASKBOX_TASK_JOBS_ERROR_DENIED:
        result = capability_error(TASKBOX_FATAL, "jobs", "denied", &err.val.denied);
        break;
    case TASKBOX_TASK_JOBS_ERROR_LIMIT:
        result = capability_error(TASKBOX_FATAL, "jobs", "limit", &err.val.limit);
        break;
    case TASKBOX_TASK_JOBS_ERROR_INVALID:
        result = capability_error(TASKBOX_FATAL, "jobs", "invalid", &err.val.invalid);
        break;
    default:
        result = capability_error(TASKBOX_RETRYABLE, "jobs", "unavailable",
                                  &err.val.unavailable);
    }
    taskbox_task_jobs_error_free(&err);
    return result;
}

/* ---- Module settings ------------------------------------------------------------------ */

char *taskbox_config_get(const char *key) {
    task_string_t key_s = borrow_string(key), ret;
    if (!taskbox_task_config_get(&key_s, &ret)) {
        return NULL;
    }
    char *value = copy_string(&ret);
    task_string_free(&ret);
    return value;
}

/* ---- Outbound HTTP -------------------------------------------------------------------- */

/* The names of wasi:http's error codes, in the order of their tags. */
static const char *const http_error_names[] = {
    "DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
    "destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
    "connection-terminated", "connection-timeout", "connection-read-timeout",
    "connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
    "TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
    "HTTP-request-length-required", "HTTP-request-body-size", "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid", "HTTP-request-URI-too-long", "HTTP-request-header-section-size",
    "HTTP-request-header-size", "HTTP-request-trailer-section-size",
    "HTTP-request-trailer-size", "HTTP-response-incomplete",
    "HTTP-response-header-section-size", "HTTP-response-header-size",
    "HTTP-response-body-size", "HTTP-response-trailer-section-size",
    "HTTP-response-trailer-size", "HTTP-response-transfer-coding",
    "HTTP-response-content-coding", "HTTP-response-timeout", "HTTP-upgrade-failed",
    "HTTP-protocol-error", "loop-detected", "configuration-error", "internal-error",
};

/* Maps a wasi:http error code (and frees it): the host's refusals and bad requests are
 * fatal, like the Rust SDK's; network failures and timeouts are retryable. */
static taskbox_result http_error(wasi_http_types_error_code_t *code) {
    const char *name = code->tag < sizeof http_error_names / sizeof *http_error_names
                           ? http_error_names[code->tag]
                           : "unknown";
    taskbox_result result;
    switch (code->tag) {
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED:
    case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_PROHIBITED:
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_LIMIT_REACHED:
        result = taskbox_fatal("http: refused by the host: %s", name);
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_METHOD_INVALID:
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_URI_INVALID:
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_PROTOCOL_ERROR:
        result = taskbox_fatal("http: invalid request: %s", name);
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR:
        if (code->val.internal_error.is_some) {
            const task_string_t *detail = &code->val.internal_error.val;
            result = taskbox_retryable("http: failed: %s: %.*s", name, (int)detail->len,
                                       (const char *)detail->ptr);
            break;
        }
        result = taskbox_retryable("http: failed: %s", name);
        break;
    default:
        result = taskbox_retryable("http: failed: %s", name);
    }
    wasi_http_types_error_code_free(code);
    return result;
}

/* Maps a failed stream operation (and drops its error) while `doing` something. */
static taskbox_result stream_error(wasi_io_streams_stream_error_t *err, const char *doing) {
    if (err->tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
        return taskbox_retryable("http: %s: the stream closed early", doing);
    }
    wasi_io_error_own_error_t error = err->val.last_operation_failed;
    wasi_http_types_error_code_t code;
    taskbox_result result;
    if (wasi_http_types_http_error_code(wasi_io_error_borrow_error(error), &code)) {
        result = http_error(&code);
    } else {
        task_string_t debug;
        wasi_io_error_method_error_to_debug_string(wasi_io_error_borrow_error(error), &debug);
        result = taskbox_retryable("http: %s: %.*s", doing, (int)debug.len,
                                   (const char *)debug.ptr);
        task_string_free(&debug);
    }
    wasi_io_error_error_drop_own(error);
    return result;
}

/* Appends one header to `fields`; on failure drops them. */
static taskbox_result append_header(wasi_http_types_own_fields_t fields, taskbox_header header) {
    static const char *const header_errors[] = {"invalid syntax", "forbidden", "immutable"};
    wasi_http_types_field_name_t name = borrow_string(header.name);
    wasi_http_types_field_value_t value = {(uint8_t *)header.value, strlen(header.value)};
    wasi_http_types_header_error_t err;
    if (wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &name, &value,
                                             &err)) {
        return taskbox_ok();
    }
    wasi_http_types_fields_drop_own(fields);
    return taskbox_fatal("http: header `%s`: %s", header.name,
                         err.tag < 3 ? header_errors[err.tag] : "refused");
}

/* Builds the request's headers, adding content-length for a body that has none. */
static taskbox_result request_headers(const taskbox_header *headers, size_t header_count,
                                      size_t body_len, wasi_http_types_own_fields_t *fields) {
    *fields = wasi_http_types_constructor_fields();
    bool has_length = false;
    for (size_t i = 0; i < header_count; i++) {
        has_length = has_length || strcasecmp(headers[i].name, "content-length") == 0;
        TASKBOX_TRY(append_header(*fields, headers[i]));
    }
    if (body_len == 0 || has_length) {
        return taskbox_ok();
    }
    char length[24];
    snprintf(length, sizeof length, "%zu", body_len);
    return append_header(*fields, (taskbox_header){"content-length", length});
}

/* Writes the request body and finishes it (consuming `body`). */
static taskbox_result send_body(wasi_http_types_own_outgoing_body_t body, const uint8_t *bytes,
                                size_t len) {
    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                    &stream)) {
        wasi_http_types_outgoing_body_drop_own(body);
        return taskbox_fatal("http: the request body was already taken");
    }
    /* blocking-write-and-flush takes at most 4096 bytes a call. */
    for (size_t done = 0; done < len; done += 4096) {
        task_list_u8_t chunk = {(uint8_t *)bytes + done, len - done < 4096 ? len - done : 4096};
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
                wasi_io_streams_borrow_output_stream(stream), &chunk, &err)) {
            wasi_io_streams_output_stream_drop_own(stream);
            wasi_http_types_outgoing_body_drop_own(body);
            return stream_error(&err, "writing the request body");
        }
    }
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t code;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &code)) {
        return http_error(&code);
    }
    return taskbox_ok();
}

/* Reads the status, headers and whole body of `incoming` into `response` (consuming
 * `incoming`). */
static taskbox_result read_response(wasi_http_types_own_incoming_response_t incoming,
                                    taskbox_response *response) {
    wasi_http_types_borrow_incoming_response_t borrowed =
        wasi_http_types_borrow_incoming_response(incoming);
    *response = (taskbox_response){.status = wasi_http_types_method_incoming_response_status(borrowed)};
    taskbox_buf_append(&response->body, "", 0);

    wasi_http_types_own_headers_t headers = wasi_http_types_method_incoming_response_headers(borrowed);
    wasi_http_types_list_tuple2_field_name_field_value_t entries;
    wasi_http_types_method_fields_entries(wasi_http_types_borrow_fields(headers), &entries);
    response->header_count = entries.len;
    response->headers = xrealloc(NULL, entries.len * sizeof *response->headers);
    for (size_t i = 0; i < entries.len; i++) {
        char *name = copy_string(&entries.ptr[i].f0);
        for (char *c = name; *c != '\0'; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
        response->headers[i] = (taskbox_header){name, copy_n(entries.ptr[i].f1.ptr, entries.ptr[i].f1.len)};
    }
    wasi_http_types_list_tuple2_field_name_field_value_free(&entries);
    wasi_http_types_fields_drop_own(headers);

    wasi_http_types_own_incoming_body_t body;
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_response_consume(borrowed, &body)) {
        wasi_http_types_incoming_response_drop_own(incoming);
        return taskbox_fatal("http: the response body was already taken");
    }
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                     &stream)) {
        wasi_http_types_incoming_body_drop_own(body);
        wasi_http_types_incoming_response_drop_own(incoming);
        return taskbox_fatal("http: the response body stream was already taken");
    }
    taskbox_result result = taskbox_ok();
    for (;;) {
        task_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(
                wasi_io_streams_borrow_input_stream(stream), 64 * 1024, &chunk, &err)) {
            if (err.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
                result = stream_error(&err, "reading the response body");
            }
            break;
        }
        taskbox_buf_append(&response->body, chunk.ptr, chunk.len);
        task_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(stream);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
    wasi_http_types_incoming_response_drop_own(incoming);
    return result;
}

taskbox_result taskbox_http_request(const char *method, const char *url,
                                    const taskbox_header *headers, size_t header_count,
                                    const void *body, size_t body_len,
                                    taskbox_response *response) {
    *response = (taskbox_response){0};
    wasi_http_types_scheme_t scheme;
    const char *rest;
    if (strncmp(url, "https://", 8) == 0) {
        scheme = (wasi_http_types_scheme_t){.tag = WASI_HTTP_TYPES_SCHEME_HTTPS};
        rest = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        scheme = (wasi_http_types_scheme_t){.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
        rest = url + 7;
    } else {
        return taskbox_fatal("http: invalid URL `%s`: not http:// or https://", url);
    }
    task_string_t authority = {(uint8_t *)rest, strcspn(rest, "/?")};
    if (authority.len == 0) {
        return taskbox_fatal("http: invalid URL `%s`: no host", url);
    }
    const char *path = rest + authority.len;
    taskbox_buf path_query = {0};
    taskbox_buf_printf(&path_query, "%s%s", *path == '/' ? "" : "/", path);

    /* The method's tag is its index here; any other name goes as `other`. */
    static const char *const methods[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                          "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    wasi_http_types_method_t wit_method = {.tag = WASI_HTTP_TYPES_METHOD_OTHER,
                                           .val.other = borrow_string(method)};
    for (uint8_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        if (strcmp(method, methods[i]) == 0) {
            wit_method = (wasi_http_types_method_t){.tag = i};
        }
    }

    wasi_http_types_own_fields_t fields;
    taskbox_result result = request_headers(headers, header_count, body_len, &fields);
    if (result.status != TASKBOX_OK) {
        taskbox_buf_free(&path_query);
        return result;
    }
    wasi_http_types_own_outgoing_request_t request =
        wasi_http_types_constructor_outgoing_request(fields);
    wasi_http_types_borrow_outgoing_request_t borrowed =
        wasi_http_types_borrow_outgoing_request(request);
    task_string_t path_s = {path_query.data, path_query.len};
    wasi_http_types_own_outgoing_body_t request_body;
    bool valid = wasi_http_types_method_outgoing_request_set_method(borrowed, &wit_method) &&
                 wasi_http_types_method_outgoing_request_set_scheme(borrowed, &scheme) &&
                 wasi_http_types_method_outgoing_request_set_authority(borrowed, &authority) &&
                 wasi_http_types_method_outgoing_request_set_path_with_query(borrowed, &path_s) &&
                 wasi_http_types_method_outgoing_request_body(borrowed, &request_body);
    taskbox_buf_free(&path_query);
    if (!valid) {
        wasi_http_types_outgoing_request_drop_own(request);
        return taskbox_fatal("http: invalid request: %s %s", method, url);
    }

    wasi_http_types_own_future_incoming_response_t future;
    wasi_http_types_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
        wasi_http_types_outgoing_body_drop_own(request_body);
        return http_error(&code);
    }
    result = send_body(request_body, body, body_len);
    if (result.status != TASKBOX_OK) {
        wasi_http_types_future_incoming_response_drop_own(future);
        return result;
    }

    wasi_io_poll_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(
        wasi_http_types_borrow_future_incoming_response(future));
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    bool some = wasi_http_types_method_future_incoming_response_get(
        wasi_http_types_borrow_future_incoming_response(future), &got);
    wasi_http_types_future_incoming_response_drop_own(future);
    if (!some || got.is_err) {
        return taskbox_retryable("http: no response");
    }
    if (got.val.ok.is_err) {
        return http_error(&got.val.ok.val.err);
    }
    result = read_response(got.val.ok.val.ok, response);
    if (result.status != TASKBOX_OK) {
        taskbox_response_free(response);
    }
    return result;
}

taskbox_result taskbox_http_get(const char *url, taskbox_response *response) {
    return taskbox_http_request("GET", url, NULL, 0, NULL, 0, response);
}

taskbox_result taskbox_http_post(const char *url, const char *content_type, const char *body,
                                 taskbox_response *response) {
    taskbox_header header = {"content-type", content_type};
    return taskbox_http_request("POST", url, &header, 1, body, strlen(body), response);
}

const char *taskbox_response_header(const taskbox_response *response, const char *name) {
    for (size_t i = 0; i < response->header_count; i++) {
        if (strcasecmp(response->headers[i].name, name) == 0) {
            return response->headers[i].value;
        }
    }
    return NULL;
}

void taskbox_response_free(taskbox_response *response) {
    for (size_t i = 0; i < response->header_count; i++) {
        free((void *)response->headers[i].name);
        free((void *)response->headers[i].value);
    }
    free(response->headers);
    taskbox_buf_free(&response->body);
    *response = (taskbox_response){0};
}

/* ---- The world's export: run ---------------------------------------------------------- */

/* The fatal error for a task name the table does not have, naming those it has. */
static taskbox_result unknown_task(const char *name) {
    taskbox_buf names = {0};
    for (const taskbox_task *task = taskbox_tasks; task->name != NULL; task++) {
        taskbox_buf_printf(&names, "%s%s", task == taskbox_tasks ? "" : ", ", task->name);
    }
    taskbox_result result =
        taskbox_fatal("this module has no task `%s` (it has: %s)", name, (const char *)names.data);
    taskbox_buf_free(&names);
    return result;
}

bool exports_task_run(task_string_t *task, task_list_u8_t *input, task_job_info_t *info,
                      task_list_u8_t *ret, task_task_error_t *err) {
    char *name = copy_string(task);
    char *text = copy_n(input->ptr, input->len);
    size_t text_len = input->len;
    taskbox_job job = {
        .id = copy_string(&info->id),
        .task = name,
        .attempt = info->attempt,
        .max_attempts = info->max_attempts,
        .queue = copy_string(&info->queue),
        .enqueued_at_ms = info->enqueued_at,
        .deadline_ms = info->deadline,
    };
    task_string_free(task);
    task_list_u8_free(input);
    task_job_info_free(info);

    const taskbox_task *entry = taskbox_tasks;
    while (entry->name != NULL && strcmp(entry->name, name) != 0) {
        entry++;
    }
    taskbox_buf output = {0};
    taskbox_result result =
        entry->name != NULL ? entry->fn(&job, text, text_len, &output) : unknown_task(name);
    free(text);
    free((void *)job.id);
    free((void *)job.queue);
    free(name);

    if (result.status == TASKBOX_OK) {
        free(result.message);
        if (output.len == 0) {
            taskbox_buf_free(&output);
        }
        *ret = (task_list_u8_t){output.data, output.len};
        return true;
    }
    taskbox_buf_free(&output);
    char *message = result.message != NULL ? result.message : copy_n("the task failed", 15);
    task_string_t message_s = {(uint8_t *)message, strlen(message)};
    if (result.status == TASKBOX_RETRYABLE) {
        err->tag = TASKBOX_TASK_TYPES_TASK_ERROR_RETRYABLE;
        err->val.retryable = (taskbox_task_types_retry_t){
            message_s, {result.retry_after_ms >= 0, (uint64_t)result.retry_after_ms}};
    } else {
        err->tag = TASKBOX_TASK_TYPES_TASK_ERROR_FATAL;
        err->val.fatal = message_s;
    }
    return false;
}
