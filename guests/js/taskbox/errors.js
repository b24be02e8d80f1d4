/**
 * How tasks fail, and how capability calls report failures.
 *
 * @module taskbox/errors
 */

/**
 * Thrown by a task for a failure that may go away if the job runs again (a timeout
 * upstream, a 503): the queue retries the job while it has attempts left.
 */
export class Retry extends Error {
  /**
   * @param {string} message What went wrong, for people reading the job record.
   * @param {{ afterMs?: number }} [options] `afterMs`: the earliest retry, in milliseconds
   *   from now; without it the host's backoff policy decides.
   */
  constructor(message, { afterMs } = {}) {
    super(message);
    this.name = 'Retry';
    /** @type {number | undefined} */
    this.afterMs = afterMs;
  }
}

/**
 * Thrown by a task for a permanent failure (bad input, a bug): the job goes to the dead
 * letters at once, without a retry.
 */
export class Fatal extends Error {
  /** @param {string} message What went wrong, for people reading the job record. */
  constructor(message) {
    super(message);
    this.name = 'Fatal';
  }
}

/**
 * A host capability (SQL, events, jobs) refused a call or failed. Its message reads like
 * `sql.query: denied: self`. Uncaught, it fails the job: retryably when `code` is
 * `unavailable`, fatally otherwise.
 */
export class CapabilityError extends Error {
  /**
   * @param {string} operation The call, such as `sql.query`.
   * @param {{ tag: string, val?: unknown }} error The WIT error variant.
   */
  constructor(operation, error) {
    super(`${operation}: ${error.tag}${error.val === undefined ? '' : `: ${error.val}`}`);
    this.name = 'CapabilityError';
    /** The call that failed, such as `sql.query`. */
    this.operation = operation;
    /** The WIT error case: `denied`, `invalid`, `too-large`, `timeout`, `unavailable`, ... */
    this.code = error.tag;
    /** The case's payload: usually the host's message, or the name it refused. */
    this.detail = error.val;
  }

  /** Whether running the job again may succeed (the backend was unavailable). */
  get retryable() {
    return this.code === 'unavailable';
  }
}

/**
 * Calls a capability import, turning the error variant it throws into a
 * {@link CapabilityError}. For the capability modules of this library.
 *
 * @template T
 * @param {string} operation The call, such as `sql.query`.
 * @param {(...args: any[]) => T} imported The imported WIT function.
 * @param {...unknown} args Its arguments.
 * @returns {T}
 */
export function call(operation, imported, ...args) {
  try {
    return imported(...args);
  } catch (error) {
    if (error !== null && typeof error === 'object' && Object.hasOwn(error, 'payload')) {
      throw new CapabilityError(operation, error.payload);
    }
    throw error;
  }
}
