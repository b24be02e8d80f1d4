/**
 * SQL against the databases the manifest grants (`sql = ["self"]` for the module's own
 * SQLite database). `import * as sql from '../taskbox/sql.js'`.
 *
 * Parameters bind to `?` (SQLite) or `$1` (PostgreSQL) placeholders: `null` and
 * `undefined` as NULL, safe integers and `bigint`s as integers, other numbers as reals,
 * booleans as 0 and 1, strings as text, `Uint8Array`s as blobs; a WIT value such as
 * `{ tag: 'real', val: 2 }` passes as is. In rows, integers come back as numbers, or as
 * `bigint`s beyond `Number.MAX_SAFE_INTEGER`, and blobs as `Uint8Array`s.
 *
 * Each function throws a {@link import('./errors.js').CapabilityError} when the host
 * refuses the call (`denied`) or the statement fails (`invalid`, `too-large`, `timeout`,
 * `unavailable`).
 *
 * @module taskbox/sql
 */

import {
  query as sqlQuery,
  execute as sqlExecute,
  batch as sqlBatch,
} from 'taskbox:task/sql@0.1.0';

import { call } from './errors.js';

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const VALUE_TAGS = new Set(['null', 'integer', 'real', 'text', 'blob']);

/**
 * Runs a statement that returns rows.
 *
 * @param {string} db The database's name.
 * @param {string} text The SQL.
 * @param {unknown[]} [params] The values bound to the placeholders.
 * @returns {Record<string, unknown>[]} One object per row, keyed by column name.
 */
export function query(db, text, params = []) {
  const { columns, rows } = call('sql.query', sqlQuery, db, text, params.map(toValue));
  return rows.map((row) =>
    Object.fromEntries(columns.map((column, index) => [column, fromValue(row[index])])),
  );
}

/**
 * Runs a statement and returns how many rows it changed.
 *
 * @param {string} db The database's name.
 * @param {string} text The SQL.
 * @param {unknown[]} [params] The values bound to the placeholders.
 * @returns {number}
 */
export function execute(db, text, params = []) {
  return Number(call('sql.execute', sqlExecute, db, text, params.map(toValue)));
}

/**
 * Runs statements in one transaction: all of them apply, or none.
 *
 * @param {string} db The database's name.
 * @param {{ sql: string, params?: unknown[] }[]} statements
 * @returns {number[]} The rows each statement changed.
 */
export function batch(db, statements) {
  const lowered = statements.map(({ sql, params = [] }) => ({ sql, params: params.map(toValue) }));
  // The bindings return a BigUint64Array, whose own `map` would make bigints again.
  return Array.from(call('sql.batch', sqlBatch, db, lowered), Number);
}

/** A JavaScript value as a WIT SQL `value`. */
function toValue(value) {
  if (value === null || value === undefined) return { tag: 'null' };
  switch (typeof value) {
    case 'bigint':
      return { tag: 'integer', val: value };
    case 'number':
      return Number.isSafeInteger(value)
        ? { tag: 'integer', val: BigInt(value) }
        : { tag: 'real', val: value };
    case 'boolean':
      return { tag: 'integer', val: value ? 1n : 0n };
    case 'string':
      return { tag: 'text', val: value };
  }
  if (value instanceof Uint8Array) return { tag: 'blob', val: value };
  if (typeof value === 'object' && VALUE_TAGS.has(value.tag)) return value;
  throw new TypeError(
    `cannot bind ${Object.prototype.toString.call(value)} as an SQL value: use null, a number, ` +
      'a bigint, a boolean, a string, a Uint8Array or a WIT value like { tag: "real", val: 2 }',
  );
}

/** A WIT SQL `value` as a JavaScript value. */
function fromValue({ tag, val }) {
  if (tag === 'null') return null;
  if (tag === 'integer' && val >= MIN_SAFE && val <= MAX_SAFE) return Number(val);
  return val;
}
