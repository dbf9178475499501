"""Frames as Dagster table metadata, the kind the UI shows as a table with typed, described
columns (`MetadataValue.table`), and the column schemas of the main tables
(`dagster/column_schema` on their definitions). metadata.py is its markdown, Dagster-free twin.

Column types are DuckDB's names for them, as `DESCRIBE` prints them (DECIMAL(38,18),
TIMESTAMP WITH TIME ZONE, ...), so a table's rows and its column schema say the same thing.
Cells are what a `TableRecord` holds (str, int, float, bool or None): a Decimal is its exact
value as text (never through a float), an instant ISO 8601 in UTC, a non-finite float None
(the UI reads JSON, which has no NaN)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl

COLUMN_SCHEMA = "dagster/column_schema"  # the definition metadata key the UI shows as the asset's columns

Cell = str | int | float | bool | None

_SIMPLE_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "VARCHAR",
    pl.Categorical: "VARCHAR",
    pl.Enum: "VARCHAR",
    pl.Boolean: "BOOLEAN",
    pl.Int8: "TINYINT",
    pl.Int16: "SMALLINT",
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.Int128: "HUGEINT",
    pl.UInt8: "UTINYINT",
    pl.UInt16: "USMALLINT",
    pl.UInt32: "UINTEGER",
    pl.UInt64: "UBIGINT",
    pl.Float32: "FLOAT",
    pl.Float64: "DOUBLE",
    pl.Date: "DATE",
    pl.Time: "TIME",
    pl.Duration: "INTERVAL",
    pl.Binary: "BLOB",
    pl.Null: "NULL",
}


def sql_type(dtype: pl.DataType) -> str:
    """DuckDB's name (as DESCRIBE prints it) for the type a polars column is stored as."""
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision or 38},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP WITH TIME ZONE" if dtype.time_zone else "TIMESTAMP"
    if isinstance(dtype, pl.List):
        return f"{sql_type(dtype.inner)}[]"
    if isinstance(dtype, pl.Array):
        return f"{sql_type(dtype.inner)}[{dtype.size}]"
    if isinstance(dtype, pl.Struct):
        return "STRUCT(" + ", ".join(f"{field.name} {sql_type(field.dtype)}" for field in dtype.fields) + ")"
    return _SIMPLE_TYPES.get(dtype.base_type(), str(dtype))


def exact_decimal(value: Decimal) -> str | None:
    """A Decimal's exact value as plain text: no exponent, no float on the way, trailing zeros
    after the point dropped ("0.500000000000000000" -> "0.5", "10.000" -> "10"); None if not finite."""
    if not value.is_finite():
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def cell(value) -> Cell:
    """One value as a `TableRecord` holds it (see the module's docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return exact_decimal(value)
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def column_schema(columns: Iterable[tuple[str, str, str]]) -> dg.TableSchema:
    """A table's column schema from its (name, DuckDB type, description) triples."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name, type=type_, description=description) for name, type_, description in columns]
    )


def frame_schema(schema: pl.Schema | Mapping[str, pl.DataType], descriptions: Mapping[str, str] | None = None):
    """The column schema of a frame: its names, their DuckDB types and the `descriptions` given."""
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, type=sql_type(dtype), description=descriptions.get(name))
            for name, dtype in schema.items()
        ]
    )


def descriptions_of(columns: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """name -> description of (name, type, description) triples (those given to `column_schema`)."""
    return {name: description for name, _, description in columns}


def frame_table(
    frame: pl.DataFrame, descriptions: Mapping[str, str] | None = None, float_places: int | None = None
) -> dg.TableMetadataValue:
    """Every row of `frame` (the caller keeps it short: it is stored with each event) as a
    `MetadataValue.table`, with the frame's column schema; an empty frame keeps its schema.
    With `float_places`, float columns are rounded to that many places for display, and their
    descriptions say so (Decimals are never rounded)."""
    descriptions = dict(descriptions or {})
    if float_places is not None:
        floats = [name for name, dtype in frame.schema.items() if dtype.is_float()]
        frame = frame.with_columns(pl.col(floats).round(float_places))
        for name in floats:
            note = f"rounded to {float_places} places here"
            descriptions[name] = f"{descriptions[name]} ({note})" if descriptions.get(name) else note.capitalize()
    records = [
        dg.TableRecord({name: cell(value) for name, value in row.items()}) for row in frame.iter_rows(named=True)
    ]
    return dg.MetadataValue.table(records, schema=frame_schema(frame.schema, descriptions))
