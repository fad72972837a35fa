"""SQL plumbing for erasure and export: every table of a service's schema that names a
customer (a `customer_key` column) or a shop (`shop_id`), found in information_schema.

Found rather than listed, so a table another change adds with a customer key is pseudonymised,
exported and erased with the rest without anyone remembering to list it here. Each service's
privacy repository deletes what must go first and hands the rest to these functions. They run
on the caller's connection, inside its transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

CUSTOMER_KEY = "customer_key"
SHOP_ID = "shop_id"

_TABLES_WITH = sa.text("""
    SELECT c.table_name FROM information_schema.columns c
    JOIN information_schema.tables t USING (table_schema, table_name)
    WHERE c.table_schema = :schema AND c.column_name = :column AND t.table_type = 'BASE TABLE'
    ORDER BY c.table_name
""")


def pseudonym(shop_id: str) -> str:
    """A customer key that names no one: random, so it cannot be traced back to the customer,
    but one per erased customer, so per-customer counts (repeat buyers) stay right."""
    return f"{shop_id}:x:{uuid.uuid4().hex}"


def _table(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


async def tables_with(conn: AsyncConnection, schema: str, column: str) -> list[str]:
    rows = await conn.execute(_TABLES_WITH, {"schema": schema, "column": column})
    return [str(row[0]) for row in rows]


async def delete_customers(
    conn: AsyncConnection, schema: str, tables: Iterable[str], keys: Collection[str]
) -> dict[str, int]:
    """Delete the rows of these customers from `tables`; rows deleted per table."""
    erased: dict[str, int] = {}
    for table in tables:
        result = await conn.execute(
            sa.text(f"DELETE FROM {_table(schema, table)} WHERE customer_key = ANY(:keys)"),
            {"keys": list(keys)},
        )
        erased[table] = int(result.rowcount)
    return erased


async def pseudonymise(
    conn: AsyncConnection, schema: str, renames: dict[str, str], skip: Collection[str] = ()
) -> dict[str, int]:
    """Replace every customer key in `renames` by its pseudonym, in every table but `skip`."""
    erased: dict[str, int] = {}
    if not renames:
        return erased
    params = {"old": list(renames), "new": list(renames.values())}
    for table in await tables_with(conn, schema, CUSTOMER_KEY):
        if table in skip:
            continue
        result = await conn.execute(
            sa.text(
                f"UPDATE {_table(schema, table)} AS t SET customer_key = m.new "
                "FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS m(old, new) "
                "WHERE t.customer_key = m.old"
            ),
            params,
        )
        erased[table] = int(result.rowcount)
    return erased


async def delete_shop(
    conn: AsyncConnection, schema: str, shop_id: str, skip: Collection[str] = ()
) -> dict[str, int]:
    """Every row of the shop: tables with a shop id by it, the others with a customer key by
    the key's shop prefix; the tables in `skip` are left alone."""
    erased: dict[str, int] = {}
    by_shop = [t for t in await tables_with(conn, schema, SHOP_ID) if t not in skip]
    by_key = [
        t
        for t in await tables_with(conn, schema, CUSTOMER_KEY)
        if t not in by_shop and t not in skip
    ]
    for table in by_shop:
        erased[table] = await _delete_where(
            conn, schema, table, "shop_id = :shop", {"shop": shop_id}
        )
    for table in by_key:
        erased[table] = await _delete_where(
            conn, schema, table, "starts_with(customer_key, :prefix)", {"prefix": shop_id + ":"}
        )
    return erased


async def _delete_where(
    conn: AsyncConnection, schema: str, table: str, where: str, params: dict[str, Any]
) -> int:
    result = await conn.execute(
        sa.text(f"DELETE FROM {_table(schema, table)} WHERE {where}"), params
    )
    return int(result.rowcount)


async def export_customers(
    conn: AsyncConnection, schema: str, keys: Collection[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every row of these customers in every table with a customer key, as JSON objects."""
    data: dict[str, list[dict[str, Any]]] = {}
    for table in await tables_with(conn, schema, CUSTOMER_KEY):
        data[table] = await rows_as_json(
            conn,
            f"SELECT to_jsonb(t)::text FROM {_table(schema, table)} AS t "
            "WHERE t.customer_key = ANY(:keys)",
            {"keys": list(keys)},
        )
    return data


async def rows_as_json(
    conn: AsyncConnection, query: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """`query` selects one jsonb-as-text column per row."""
    return [orjson.loads(row[0]) for row in await conn.execute(sa.text(query), params)]
