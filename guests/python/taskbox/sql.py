"""Parameterised SQL against the databases the module is granted (`sql = ["self"]` in the
manifest for its private SQLite database; operator-named SQLite or PostgreSQL databases by
name, `NAME:read` for read-only). Values are bound to `?` (SQLite) or `$1` (PostgreSQL)
placeholders, never spliced into the SQL.

Python values map to SQL values as `None` → NULL, `bool` and `int` → integer, `float` →
real, `str` → text, `bytes` → blob; results come back the same way (booleans as 0 or 1).

    sql.execute("self", "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    sql.execute("self", "INSERT INTO notes (body) VALUES (?)", ["hello"])
    for note in sql.query("self", "SELECT id, body FROM notes"):
        print(note["id"], note["body"])
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from componentize_py_types import Err
from wit_world.imports import sql
from wit_world.imports.sql import (
    Statement,
    Value,
    Value_Blob,
    Value_Integer,
    Value_Null,
    Value_Real,
    Value_Text,
)

from .errors import CapabilityError

#: A Python value that maps to an SQL value.
SqlValue = None | bool | int | float | str | bytes

_I64 = range(-(2**63), 2**63)


class SqlError(CapabilityError):
    """A statement failed. `kind` is `denied` (the database is not granted, or not for
    writing, or the engine's guard refused the statement), `invalid` (the database's
    message), `too-large` (the detail names the cap), `timeout` (past the job's deadline)
    or `unavailable` (worth a retry).
    """


@dataclass
class Rows:
    """The rows a query returned: column names, and one tuple of values per row."""

    columns: list[str]
    rows: list[tuple[SqlValue, ...]]

    def dicts(self) -> list[dict[str, SqlValue]]:
        """One dict per row, column name to value (a repeated name keeps its last value)."""
        return [dict(zip(self.columns, row)) for row in self.rows]


def query(db: str, statement: str, params: Sequence[SqlValue] = ()) -> list[dict[str, SqlValue]]:
    """Runs a statement that returns rows, as one dict per row."""
    return query_rows(db, statement, params).dicts()


def query_rows(db: str, statement: str, params: Sequence[SqlValue] = ()) -> Rows:
    """Runs a statement that returns rows, as column names and value tuples."""
    result = _call(sql.query, db, statement, _to_wit_all(params))
    return Rows(
        columns=list(result.columns),
        rows=[tuple(_from_wit(value) for value in row) for row in result.rows],
    )


def execute(db: str, statement: str, params: Sequence[SqlValue] = ()) -> int:
    """Runs a statement and returns how many rows it changed."""
    return _call(sql.execute, db, statement, _to_wit_all(params))


def batch(db: str, statements: Iterable[str | tuple[str, Sequence[SqlValue]]]) -> list[int]:
    """Runs statements in one transaction, all or none, and returns the rows each changed.
    A statement is SQL text, or a `(sql, params)` pair.
    """
    wit_statements = [
        Statement(item, []) if isinstance(item, str) else Statement(item[0], _to_wit_all(item[1]))
        for item in statements
    ]
    return _call(sql.batch, db, wit_statements)


def _call(function, *args):
    try:
        return function(*args)
    except Err as err:
        raise SqlError.from_wit(err.value) from None


def _to_wit_all(params: Sequence[SqlValue]) -> list[Value]:
    return [_to_wit(value) for value in params]


def _to_wit(value: SqlValue) -> Value:
    if value is None:
        return Value_Null()
    if isinstance(value, bool):
        return Value_Integer(int(value))
    if isinstance(value, int):
        if value not in _I64:
            raise ValueError(f"{value} does not fit an SQL integer (64 bits)")
        return Value_Integer(value)
    if isinstance(value, float):
        return Value_Real(value)
    if isinstance(value, str):
        return Value_Text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Value_Blob(bytes(value))
    raise TypeError(
        f"a {type(value).__name__} is not an SQL value (use None, int, float, str or bytes)"
    )


def _from_wit(value: Value) -> SqlValue:
    return None if isinstance(value, Value_Null) else value.value
