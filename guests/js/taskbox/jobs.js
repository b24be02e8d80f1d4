/**
 * Further jobs: chains and fan-out, to the targets the manifest grants
 * (`enqueue = ["thumbnails/*"]`). `import * as jobs from '../taskbox/jobs.js'`.
 *
 * @module taskbox/jobs
 */

import { enqueue as enqueueJob } from 'taskbox:task/jobs@0.1.0';

import { call } from './errors.js';
import { toBytes } from './json.js';

/**
 * Enqueues a job and returns its id. The new job records this one as its parent.
 *
 * @param {string} task `TASK` of this module or `MODULE/TASK`.
 * @param {unknown} [input] Encoded as JSON, or a `Uint8Array` sent as is.
 * @param {{ queue?: string, priority?: 'high' | 'normal' | 'low', delayMs?: number,
 *   maxRetries?: number, idempotencyKey?: string }} [options] Absent fields take the
 *   target task's settings.
 * @returns {string}
 * @throws {import('./errors.js').CapabilityError} When the host refuses it (`denied`,
 *   `limit`, `invalid`) or the queue is `unavailable`.
 */
export function enqueue(task, input = null, options = {}) {
  return call('jobs.enqueue', enqueueJob, task, toBytes(input, 'the job input'), options);
}
