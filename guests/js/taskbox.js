/**
 * Writing taskbox tasks in JavaScript: the `taskbox:task` world as JavaScript idioms.
 *
 * A module's entry file exports `run`, made by {@link tasks} from an object of task
 * functions. Each task takes the job's input, decoded from JSON, and a {@link Job}, and
 * returns (or resolves to) its output, which is encoded as JSON:
 *
 * ```js
 * import { tasks, Fatal, log } from '../taskbox.js';
 *
 * export const run = tasks({
 *   async greet(input, job) {
 *     if (!input?.name) throw new Fatal('`name` is required');
 *     log.info(`greeting ${input.name} (attempt ${job.attempt})`);
 *     return { message: `Hello, ${input.name}!` };
 *   },
 * });
 * ```
 *
 * This module needs no capability. Those that do live beside it, one module each, so that a
 * component imports only the interfaces its manifest grants: `taskbox/sql.js`,
 * `taskbox/events.js` and `taskbox/jobs.js`. Outbound HTTP is the standard `fetch`.
 * `console.log` and `console.error` write to the job's log.
 *
 * @module taskbox
 */

import { write as writeLog } from 'taskbox:task/log@0.1.0';
import { report } from 'taskbox:task/progress@0.1.0';
import { get as configGet } from 'taskbox:task/config@0.1.0';

import { CapabilityError, Fatal, Retry } from './taskbox/errors.js';
import { toBytes } from './taskbox/json.js';

export { CapabilityError, Fatal, Retry };

const textDecoder = new TextDecoder('utf-8', { fatal: true });

/** What the host tells a task about the job it runs. */
class Job {
  /** @param {Record<string, any>} info The WIT `job-info` record. */
  constructor(info) {
    /** The job id: the queue's name, `-`, and 32 hex digits. */
    this.id = info.id;
    /** The task name the job was enqueued for. */
    this.task = info.task;
    /** Which attempt this is, starting at 1. */
    this.attempt = info.attempt;
    /** How many attempts the job may have in all. */
    this.maxAttempts = info.maxAttempts;
    /** The queue the job was taken from. */
    this.queue = info.queue;
    /** When the job was enqueued, in milliseconds since the Unix epoch. */
    this.enqueuedAt = Number(info.enqueuedAt);
    /** When the host stops this attempt, in milliseconds since the Unix epoch. */
    this.deadline = Number(info.deadline);
  }

  /** Whether a {@link Retry} would run the job again. */
  get hasAttemptsLeft() {
    return this.attempt < this.maxAttempts;
  }

  /**
   * Reports how far the job has come: stored on the job and published on `job:{id}`.
   *
   * @param {number} percent Rounded and clamped to 0..100.
   * @param {string} [message] What is happening.
   */
  progress(percent, message = '') {
    report(Math.min(100, Math.max(0, Math.round(percent) || 0)), String(message));
  }
}

/**
 * Makes the world's `run` export from the module's tasks. Export the result as `run`.
 *
 * A task returns anything `JSON.stringify` takes (a `bigint` becomes a decimal string,
 * `undefined` becomes `null`), or a `Uint8Array` sent as is. Input that is not JSON fails
 * the job as fatal, and no input at all reads as `null`. Throwing {@link Retry} or
 * {@link Fatal} fails the job as asked; a {@link CapabilityError} retries when the backend
 * was unavailable and is fatal otherwise; any other exception is fatal, with the exception
 * as the message and its stack in the job's log. A job for a task the module does not have
 * fails as fatal, naming the tasks there are.
 *
 * A task may be `async` (or return a promise), and its result is then awaited; the result
 * of any other task is used as it is returned, which spares the job a promise and a turn of
 * the event loop.
 *
 * @param {Record<string, (input: any, job: Job) => unknown>} handlers The tasks, by name.
 * @returns {(task: string, input: Uint8Array, info: object) => object | Promise<object>} `run`.
 */
export function tasks(handlers) {
  const names = Object.keys(handlers);
  return function run(name, input, info) {
    const handler = Object.hasOwn(handlers, name) ? handlers[name] : undefined;
    if (typeof handler !== 'function') {
      const known = names.map((task) => `\`${task}\``).join(', ') || 'none';
      return failure({ tag: 'fatal', val: `this module has no task \`${name}\` (tasks: ${known})` });
    }
    let output;
    try {
      output = handler(decodeInput(input), new Job(info));
    } catch (error) {
      return failure(taskError(error));
    }
    if (typeof output?.then === 'function') {
      return Promise.resolve(output).then(success, (error) => failure(taskError(error)));
    }
    return success(output);
  };
}

/** The job's log. Lines printed with `console.log` and `console.error` land there too. */
export const log = {
  /** @param {string} message */
  trace: (message) => writeLog('trace', String(message)),
  /** @param {string} message */
  debug: (message) => writeLog('debug', String(message)),
  /** @param {string} message */
  info: (message) => writeLog('info', String(message)),
  /** @param {string} message */
  warn: (message) => writeLog('warn', String(message)),
  /** @param {string} message */
  error: (message) => writeLog('error', String(message)),
};

/** The module's settings and secrets, which the operator sets. */
export const config = {
  /**
   * @param {string} key
   * @returns {string | undefined} The value, or `undefined` when it is not set.
   */
  get(key) {
    return configGet(key);
  },

  /**
   * @param {string} key
   * @returns {string} The value.
   * @throws {Fatal} When it is not set, naming the key.
   */
  require(key) {
    const value = configGet(key);
    if (value === undefined) {
      throw new Fatal(
        `the module setting \`${key}\` is not set: the operator sets it in the host config`,
      );
    }
    return value;
  },
};

/** The job's input: JSON, with no bytes at all read as `null`. */
function decodeInput(bytes) {
  if (bytes.length === 0) return null;
  try {
    return JSON.parse(textDecoder.decode(bytes));
  } catch (error) {
    throw new Fatal(`the input is not JSON: ${error.message}`);
  }
}

/** The WIT `task-error` for an exception that left a task. */
function taskError(error) {
  if (error instanceof Retry) {
    const afterMs = Number.isFinite(error.afterMs)
      ? BigInt(Math.max(0, Math.ceil(error.afterMs)))
      : undefined;
    return { tag: 'retryable', val: { message: error.message, retryAfterMs: afterMs } };
  }
  if (error instanceof Fatal) {
    return { tag: 'fatal', val: error.message };
  }
  if (error instanceof CapabilityError) {
    return error.retryable
      ? { tag: 'retryable', val: { message: error.message, retryAfterMs: undefined } }
      : { tag: 'fatal', val: error.message };
  }
  if (error instanceof Error && error.stack) {
    writeLog('error', `${error}\n${error.stack}`);
  }
  return { tag: 'fatal', val: String(error) };
}

/** The `run` result for a task's output. */
function success(output) {
  try {
    return { tag: 'ok', val: toBytes(output, 'the output') };
  } catch (error) {
    return failure(taskError(error));
  }
}

/** A failed `run` result. */
function failure(error) {
  return { tag: 'err', val: error };
}

/**
 * Runs this library's part of a job once, while the component is pre-initialised at build
 * time: JavaScript makes builtins and compiles functions on first use, and what is made
 * before the snapshot is not made again by every job. (It took the example's no-op job from
 * about 490 to 430 thousand WebAssembly instructions.) The task is the library's own; no
 * task of the module runs here.
 */
function warmUp() {
  const input = new TextEncoder().encode('{"warm":[1,"up",true,null]}');
  const run = tasks({ warmUp: (value, job) => ({ value, attempt: job.attempt, big: 1n }) });
  run('warmUp', input, {
    id: 'warm-up',
    task: 'warmUp',
    attempt: 1,
    maxAttempts: 1,
    queue: 'warm-up',
    enqueuedAt: 0n,
    deadline: 0n,
  });
}

warmUp();
