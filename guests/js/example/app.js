/**
 * The JavaScript example module: one task per capability, and `noop` for measuring the
 * sandbox's overhead.
 */

import { tasks, Fatal, Retry, log } from '../taskbox.js';
import * as events from '../taskbox/events.js';
import * as sql from '../taskbox/sql.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS notes (
  job TEXT PRIMARY KEY,
  text TEXT NOT NULL,
  at INTEGER NOT NULL
)`;

export const run = tasks({
  /** Greets `name`: input errors are fatal, and progress goes to the job. */
  greet(input, job) {
    if (typeof input?.name !== 'string' || input.name === '') {
      throw new Fatal('`name` must be a non-empty string');
    }
    job.progress(100, 'greeted');
    console.log(`greeting ${input.name} in job ${job.id}`);
    return { message: `Hello, ${input.name}!` };
  },

  /**
   * GETs `url` and describes the response. A 5xx is retried after 5 s; a failure to
   * connect or a refusal by the host fails the job.
   */
  async fetch(input) {
    if (typeof input?.url !== 'string') throw new Fatal('`url` must be a string');
    const response = await fetch(input.url);
    const body = await response.text();
    if (response.status >= 500) {
      throw new Retry(`${input.url} answered ${response.status}`, { afterMs: 5000 });
    }
    log.info(`${input.url}: ${response.status}, ${body.length} characters`);
    return {
      status: response.status,
      contentType: response.headers.get('content-type'),
      length: body.length,
    };
  },

  /**
   * Writes `text` as this job's note in the module's own database and reads it back, with
   * how many notes there are.
   */
  note(input, job) {
    if (typeof input?.text !== 'string') throw new Fatal('`text` must be a string');
    sql.batch('self', [
      { sql: SCHEMA },
      {
        sql: 'INSERT OR REPLACE INTO notes (job, text, at) VALUES (?, ?, ?)',
        params: [job.id, input.text, Date.now()],
      },
    ]);
    const [note] = sql.query('self', 'SELECT job, text, at FROM notes WHERE job = ?', [job.id]);
    const [{ count }] = sql.query('self', 'SELECT count(*) AS count FROM notes');
    return { note, count };
  },

  /** Publishes `data` as event `event` (default `message`) on `example:{room}`. */
  announce(input) {
    if (typeof input?.room !== 'string') throw new Fatal('`room` must be a string');
    const channel = `example:${input.room}`;
    events.publish(channel, input.event ?? 'message', input.data ?? null);
    return { channel };
  },

  /** Does nothing: the overhead of a job. */
  noop() {
    return null;
  },
});
