"""Who may do what on PostgreSQL: the app's tables belong to an owner role (the app's), the service connects
as a role of its own that owns none of them and holds only SELECT, INSERT and UPDATE on them.

So "the service can never DROP, DELETE, TRUNCATE or ALTER an app table" holds by privilege: PostgreSQL itself
refuses it (tests/store/postgres/test_privileges.py), and the service refuses to start on a role that could
(`role_problems`). `python -m service postgres-setup` prints the SQL an operator runs once.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from typing import Any

APP_TABLES = ("users", "sync_data", "sync_sequence", "logbook_entries", "sync_metadata")
# What the service does to an app table: read it, add rows, change rows (soft deletes are updates).
SERVICE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")
# Every table privilege PostgreSQL has that the service must not hold on an app table.
FORBIDDEN_PRIVILEGES = ("DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _name(value: str) -> str:
    """An SQL identifier we write into a script: plain lower-case names only, so nothing needs quoting."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain lower-case SQL name ([a-z_][a-z0-9_]*)")
    return value


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def app_schema_sql() -> str:
    """The app's tables in PostgreSQL's dialect (run by their owner)."""
    return resources.files(__package__).joinpath("app_schema.sql").read_text(encoding="utf-8")


def grants_sql(service_role: str, *, schema: str = "public") -> str:
    """What the owner of the app's tables grants the service's role (run by that owner, or a superuser)."""
    role, schema = _name(service_role), _name(schema)
    tables = ", ".join(f"{schema}.{t}" for t in APP_TABLES)
    return (
        f"-- The service reads and writes the app's tables, never drops, deletes, truncates or alters them.\n"
        f"GRANT USAGE ON SCHEMA {schema} TO {role};\n"
        f"GRANT {', '.join(SERVICE_PRIVILEGES)} ON {tables} TO {role};\n"
        f"-- Its own recovery_ tables (created by its numbered migrations, owned by it) go in the same schema.\n"
        f"GRANT CREATE ON SCHEMA {schema} TO {role};\n"
    )


def setup_sql(*, database: str, owner_role: str, service_role: str, service_password: str | None = None,
              with_app_schema: bool = True) -> str:
    """The whole setup as a psql script for a superuser: both roles, the database (C locale, owned by the
    owner), the app's tables created as their owner, and the service's grants."""
    database, owner, service = _name(database), _name(owner_role), _name(service_role)
    password = f" PASSWORD {_literal(service_password)}" if service_password else ""
    parts = [
        "-- Run as a PostgreSQL superuser: psql -v ON_ERROR_STOP=1 -f this.sql",
        f"CREATE ROLE {owner} NOLOGIN;",
        f"CREATE ROLE {service} LOGIN{password};",
        "-- C locale: ids sort and LOWER(email) matches byte by byte, as on SQLite (D1).",
        f"CREATE DATABASE {database} OWNER {owner} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;",
        f"\\connect {database}",
        f"REVOKE ALL ON DATABASE {database} FROM PUBLIC;",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {service};",
    ]
    if with_app_schema:
        parts += [
            "-- The app's tables, owned by the owner role (load the app's data into them as that role).",
            f"SET ROLE {owner};",
            app_schema_sql().strip(),
            "RESET ROLE;",
        ]
    parts.append(grants_sql(service).strip())
    return "\n".join(parts) + "\n"


ROLE_CHECK_SQL = """
SELECT r.rolsuper,
       (SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_class c
         WHERE c.relname = ANY(%(tables)s) AND c.relkind IN ('r', 'p') AND c.relnamespace = to_regnamespace(%(schema)s)
           AND pg_has_role(current_user, c.relowner, 'USAGE')) AS owned,
       (SELECT array_agg(c.relname || ': ' || p.privilege ORDER BY c.relname, p.privilege) FROM pg_class c
          CROSS JOIN unnest(%(forbidden)s::text[]) AS p(privilege)
         WHERE c.relname = ANY(%(tables)s) AND c.relkind IN ('r', 'p') AND c.relnamespace = to_regnamespace(%(schema)s)
           AND has_table_privilege(current_user, c.oid, p.privilege)) AS forbidden
FROM pg_roles r WHERE r.rolname = current_user
"""


def role_problems(conn: Any, *, schema: str = "public") -> list[str]:
    """Why the connected role may not run the service (empty when it may): a superuser, a member of an app
    table's owner, or a holder of a privilege beyond SELECT/INSERT/UPDATE on one could drop or empty it.
    `conn` is a psycopg connection."""
    row = conn.execute(
        ROLE_CHECK_SQL,
        {"tables": list(APP_TABLES), "schema": schema, "forbidden": list(FORBIDDEN_PRIVILEGES)},
    ).fetchone()
    superuser, owned, forbidden = row
    problems: list[str] = []
    if superuser:
        problems.append("the role is a superuser")
    if owned:
        problems.append(f"the role owns (or is a member of the owner of) {', '.join(owned)}")
    if forbidden:
        by_privilege: dict[str, list[str]] = {}
        for item in forbidden:
            table, privilege = item.split(": ")
            by_privilege.setdefault(privilege, []).append(table)
        held = "; ".join(f"{p} on {', '.join(t)}" for p, t in sorted(by_privilege.items()))
        problems.append(f"the role holds {held}")
    return problems


def missing_app_tables(conn: Any, *, schema: str = "public") -> list[str]:
    """The app's tables the database does not have (their owner creates them, never the service)."""
    rows = conn.execute(
        "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(quote_ident(%s) || '.' || t) IS NULL ORDER BY t",
        (list(APP_TABLES), schema),
    ).fetchall()
    return [r[0] for r in rows]


def add_arguments(parser: Any) -> None:
    """`python -m service postgres-setup`'s options (an argparse parser)."""
    parser.add_argument("--database", default="mirubato", help="the app database's name (default mirubato)")
    parser.add_argument("--owner-role", default="mirubato_app",
                        help="the role that owns the app's tables (default mirubato_app)")
    parser.add_argument("--service-role", default="resync", help="the role the service connects as (default resync)")
    parser.add_argument("--service-password", default=None, help="the service role's password (default: none set)")
    parser.add_argument("--grants-only", action="store_true",
                        help="only the GRANTs, for a database whose app tables and roles exist already")
    parser.add_argument("--no-app-schema", action="store_true",
                        help="roles, database and grants, without creating the app's tables")


def run(args: Any) -> int:
    """Print the SQL (the operator runs it as a superuser, e.g. `| psql -v ON_ERROR_STOP=1`)."""
    try:
        if args.grants_only:
            print(grants_sql(args.service_role), end="")
        else:
            print(setup_sql(database=args.database, owner_role=args.owner_role, service_role=args.service_role,
                            service_password=args.service_password, with_app_schema=not args.no_app_schema),
                  end="")
    except ValueError as error:
        print(f"error: {error}", flush=True, file=sys.stderr)
        return 2
    return 0
