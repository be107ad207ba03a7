"""The shape of a run's tables, shared by the writer and the read side.

Readers (``read()``, ``runs()``, the command line, the web page) import this
module, never the writer, so reading a run loads none of the machinery that
writes one.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

#: The columns every table starts with.
BASE_SCHEMA = pa.schema([("step", pa.int64()), ("created_at", pa.timestamp("us", tz="UTC"))])


def empty_table() -> pa.Table:
    """A run with no rows: just ``step`` and ``created_at``."""
    return BASE_SCHEMA.empty_table()


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Rows of several tables in order; later columns are added, ints widen to floats."""
    if not tables:
        return empty_table()
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid:
        # An int beyond 2**53 in a column that a later table widened to float:
        # pyarrow's promotion refuses to round it, the column rule ("ints may
        # widen to floats") rounds it as float() does.  Types that cannot be
        # unified at all raise ArrowTypeError from unify_schemas.
        schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
        return pa.concat_tables([conform(t, schema) for t in tables])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns of ``schema``: missing ones null, types widened."""
    if table.schema.equals(schema):
        return table
    names = table.schema.names
    columns = []
    for field in schema:
        if field.name in names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type, safe=False))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
