/**
 * The JSON encoding of outputs, events and job inputs.
 *
 * @module taskbox/json
 */

import { Fatal } from './errors.js';

const textEncoder = new TextEncoder();

/**
 * A value as bytes: a `Uint8Array` as is, anything else as JSON (see {@link toJson}).
 *
 * @param {unknown} value
 * @param {string} what What the value is, for the error message.
 * @returns {Uint8Array}
 */
export function toBytes(value, what) {
  return value instanceof Uint8Array ? value : textEncoder.encode(toJson(value, what));
}

/**
 * A value as JSON text, with `bigint`s as decimal strings and `undefined` as `null`.
 *
 * @param {unknown} value
 * @param {string} what What the value is, for the error message.
 * @returns {string}
 * @throws {Fatal} When the value cannot be encoded (a cycle, for one).
 */
export function toJson(value, what) {
  try {
    const text = JSON.stringify(value, (_key, item) =>
      typeof item === 'bigint' ? String(item) : item,
    );
    return text ?? 'null';
  } catch (error) {
    throw new Fatal(`${what} cannot be encoded as JSON: ${error.message}`);
  }
}
