"""A statement's plain parameters written as SQL literals, byte for byte as psycopg2 writes them.

`Statements` (database.py) formats each queued statement before sending a transaction's
writes as one query. psycopg2's `mogrify` adapts every parameter through its adapter
registry (a lookup, an adapter object, the connection's encoder, PQescapeStringConn):
about 0.7 µs a value, and a message's persist has about thirty of them (event row,
edges, auth edges, extremities, txn id), on the pool thread, every send. The types a
persist passes (str, int, bool, None) have fixed literals on a connection with
`standard_conforming_strings = on` and UTF-8 as its client encoding, which is what
psycopg2 itself then writes:

- a str: `'` + the text with each `'` doubled + `'` (a backslash is an ordinary
  character in a standard string; PQescapeStringConn doubles only quotes there);
- an int: its digits, a negative one after a space (` -5`, so `1-%s` never reads as
  the comment `--`);
- True/False as `true`/`false`; None as `NULL`.

Anything else (another type, a subclass, a str holding NUL, which psycopg2 refuses, or
text that is not encodable) answers None here, and the caller lets `mogrify` format
that statement as before, errors included. tests/storage/test_sql_literals.py compares
the bytes with mogrify's over random values and runs them through PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def plain_connection(connection: Any) -> bool:
    """Whether `connection` reads the literals written here as psycopg2's (see above)."""
    return bool(connection.get_parameter_status("standard_conforming_strings") == "on"
                and connection.encoding == "UTF8")


def literal(value: Any) -> str | None:
    """`value` as psycopg2 writes it on a plain connection; None when it is not a plain value."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            return None
        return "'" + value.replace("'", "''") + "'" if "'" in value else "'" + value + "'"
    if kind is int:
        return str(value) if value >= 0 else " " + str(value)
    if value is None:
        return "NULL"
    if kind is bool:
        return "true" if value else "false"
    return None


def statement(sql: str, args: Sequence[Any]) -> bytes | None:
    """`sql` with its `%s` placeholders filled from `args`, encoded; None to leave it to
    mogrify (a parameter that is not plain, a `%` other than `%s`, a count mismatch)."""
    # Split afresh each time, not cached by text: some texts are built per batch (push's
    # statement grows with its rows), and a cache of them would be memory kept for nothing.
    pieces = sql.split("%s")
    if sql.count("%") != len(pieces) - 1:  # a % that is not a placeholder: mogrify's %%
        return None
    if type(args) not in (tuple, list) or len(args) != len(pieces) - 1:
        return None
    out = [pieces[0]]
    for value, piece in zip(args, pieces[1:]):  # noqa: B905 (lengths checked above)
        text = literal(value)
        if text is None:
            return None
        out.append(text)
        out.append(piece)
    return _encoded("".join(out))


def values(head: str, rows: Sequence[Sequence[Any]], tail: str) -> bytes | None:
    """`head` + `VALUES (..),(..)` of `rows` + `tail`, as Statements.execute_values' mogrify
    writes it (rows joined by `,`, values by `,`); None to leave it to mogrify."""
    if "%" in head or "%" in tail:
        return None
    written = []
    for row in rows:
        texts = [literal(value) for value in row]
        if None in texts:
            return None
        written.append("(" + ",".join(texts) + ")")  # type: ignore[arg-type]
    return _encoded(f"{head}VALUES {','.join(written)}{tail}")


def _encoded(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: mogrify raises what it raised before
        return None
