/*
 * The example C task module: one task per capability.
 *
 *   noop      does nothing and returns null (the cost of a job)
 *   greet     {"name":"Ada"} -> {"message":"Hello, Ada!"}: log, progress and config
 *             (the module setting `greeting`, "Hello" when unset)
 *   note      {"text":"..."} -> the row it wrote to its own SQLite database and read back
 *   announce  {"channel":"example:news","text":"..."} -> publishes the text as an event
 *   relay     {"channel":"example:news","text":"..."} -> enqueues `announce` with that input
 *   fetch     {"url":"https://..."} -> the status, content type and size of a GET; a 5xx is
 *             retried after 10 s
 */

#include <stdlib.h>

#include "taskbox.h"

static taskbox_result noop(const taskbox_job *job, const char *input, size_t input_len,
                           taskbox_buf *output) {
    (void)job, (void)input, (void)input_len;
    taskbox_buf_append_str(output, "null");
    return taskbox_ok();
}

static taskbox_result greet(const taskbox_job *job, const char *input, size_t input_len,
                            taskbox_buf *output) {
    (void)input_len;
    char *name = taskbox_json_string(input, "name");
    if (name == NULL || name[0] == '\0') {
        free(name);
        return taskbox_fatal("`name` must be a non-empty string");
    }
    char *greeting = taskbox_config_get("greeting");
    taskbox_progress(50, "greeting %s", name);
    taskbox_log(TASKBOX_INFO, "greeting %s in job %s (attempt %u of %u)", name, job->id,
                job->attempt, job->max_attempts);
    taskbox_buf message = {0};
    taskbox_buf_printf(&message, "%s, %s!", greeting != NULL ? greeting : "Hello", name);
    taskbox_buf_append_str(output, "{\"message\":");
    taskbox_buf_append_json_string(output, (const char *)message.data);
    taskbox_buf_append_str(output, "}");
    taskbox_buf_free(&message);
    free(greeting);
    free(name);
    return taskbox_ok();
}

static taskbox_result note(const taskbox_job *job, const char *input, size_t input_len,
                           taskbox_buf *output) {
    (void)input_len;
    char *text = taskbox_json_string(input, "text");
    if (text == NULL) {
        return taskbox_fatal("`text` must be a string");
    }
    /* One row per job, so a retried job writes its note once. */
    taskbox_value params[] = {TASKBOX_SQL_TEXT(job->id), TASKBOX_SQL_TEXT(text)};
    taskbox_result result = taskbox_sql_execute(
        "self", "CREATE TABLE IF NOT EXISTS notes (job TEXT PRIMARY KEY, text TEXT NOT NULL)",
        NULL, 0, NULL);
    if (result.status == TASKBOX_OK) {
        result = taskbox_sql_execute("self", "INSERT OR REPLACE INTO notes (job, text) VALUES (?, ?)",
                                     params, 2, NULL);
    }
    free(text);
    TASKBOX_TRY(result);

    taskbox_rows rows;
    TASKBOX_TRY(taskbox_sql_query(
        "self", "SELECT text, (SELECT count(*) FROM notes) AS notes FROM notes WHERE job = ?",
        params, 1, &rows));
    const taskbox_value *stored = taskbox_rows_get(&rows, 0, "text");
    const taskbox_value *count = taskbox_rows_get(&rows, 0, "notes");
    if (stored == NULL || stored->kind != TASKBOX_TEXT || count == NULL ||
        count->kind != TASKBOX_INTEGER) {
        taskbox_rows_free(&rows);
        return taskbox_fatal("the note of job %s was not read back", job->id);
    }
    taskbox_buf_append_str(output, "{\"job\":");
    taskbox_buf_append_json_string(output, job->id);
    taskbox_buf_append_str(output, ",\"text\":");
    taskbox_buf_append_json_string(output, stored->text);
    taskbox_buf_printf(output, ",\"notes\":%lld}", (long long)count->integer);
    taskbox_rows_free(&rows);
    return taskbox_ok();
}

/* Reads {"channel": ..., "text": ...}; on success the caller frees both. */
static taskbox_result channel_and_text(const char *input, char **channel, char **text) {
    *channel = taskbox_json_string(input, "channel");
    *text = taskbox_json_string(input, "text");
    if (*channel == NULL || *text == NULL) {
        free(*channel);
        free(*text);
        return taskbox_fatal("the input must have the strings `channel` and `text`");
    }
    return taskbox_ok();
}

static taskbox_result announce(const taskbox_job *job, const char *input, size_t input_len,
                               taskbox_buf *output) {
    (void)input_len;
    char *channel, *text;
    TASKBOX_TRY(channel_and_text(input, &channel, &text));
    taskbox_buf data = {0};
    taskbox_buf_append_str(&data, "{\"text\":");
    taskbox_buf_append_json_string(&data, text);
    taskbox_buf_append_str(&data, ",\"job\":");
    taskbox_buf_append_json_string(&data, job->id);
    taskbox_buf_append_str(&data, "}");
    taskbox_result result = taskbox_events_publish(channel, "announcement", (const char *)data.data);
    if (result.status == TASKBOX_OK) {
        taskbox_buf_append_str(output, "{\"published\":");
        taskbox_buf_append_json_string(output, channel);
        taskbox_buf_append_str(output, "}");
    }
    taskbox_buf_free(&data);
    free(channel);
    free(text);
    return result;
}

static taskbox_result relay(const taskbox_job *job, const char *input, size_t input_len,
                            taskbox_buf *output) {
    (void)job, (void)input_len;
    char *channel, *text, *id;
    TASKBOX_TRY(channel_and_text(input, &channel, &text));
    free(channel);
    free(text);
    TASKBOX_TRY(taskbox_jobs_enqueue("announce", input, NULL, &id));
    taskbox_buf_append_str(output, "{\"enqueued\":");
    taskbox_buf_append_json_string(output, id);
    taskbox_buf_append_str(output, "}");
    free(id);
    return taskbox_ok();
}

static taskbox_result fetch(const taskbox_job *job, const char *input, size_t input_len,
                            taskbox_buf *output) {
    (void)job, (void)input_len;
    char *url = taskbox_json_string(input, "url");
    if (url == NULL) {
        return taskbox_fatal("`url` must be a string");
    }
    taskbox_response response;
    taskbox_result result = taskbox_http_get(url, &response);
    free(url);
    TASKBOX_TRY(result);
    if (response.status >= 500) {
        uint16_t status = response.status;
        taskbox_response_free(&response);
        return taskbox_retryable_after(10000, "the server answered %u", status);
    }
    const char *type = taskbox_response_header(&response, "content-type");
    taskbox_buf_printf(output, "{\"status\":%u,\"content_type\":", response.status);
    if (type != NULL) {
        taskbox_buf_append_json_string(output, type);
    } else {
        taskbox_buf_append_str(output, "null");
    }
    taskbox_buf_printf(output, ",\"bytes\":%zu}", response.body.len);
    taskbox_response_free(&response);
    return taskbox_ok();
}

TASKBOX_TASKS({"noop", noop}, {"greet", greet}, {"note", note}, {"announce", announce},
              {"relay", relay}, {"fetch", fetch});
