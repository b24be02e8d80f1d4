/**
 * Events for whoever listens (SSE, `taskbox events`), on the channels the manifest grants
 * (`event_channels = ["upload:*"]`). `import * as events from '../taskbox/events.js'`.
 *
 * @module taskbox/events
 */

import { publish as publishEvent } from 'taskbox:task/events@0.1.0';

import { call } from './errors.js';
import { toJson } from './json.js';

/**
 * Publishes an event.
 *
 * @param {string} channel Such as `upload:42`.
 * @param {string} event The event's name.
 * @param {unknown} data A string as is, anything else as JSON.
 * @throws {import('./errors.js').CapabilityError} When the host refuses it (`denied`,
 *   `invalid-channel`, `invalid-event`, `too-large`) or cannot deliver it (`unavailable`).
 */
export function publish(channel, event, data) {
  const text = typeof data === 'string' ? data : toJson(data, 'the event data');
  call('events.publish', publishEvent, channel, event, text);
}
