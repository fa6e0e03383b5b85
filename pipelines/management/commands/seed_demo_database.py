"""`manage.py seed_demo_database`: create the demo sales database the "SQL analyst" workflow reads, and the
least-privilege role the demo connector reads it as.

The database lives at CHATSITE_DEMO_DATABASE_URL, an admin URL (a role that may create databases and roles;
the Makefile defaults it to a `chatsite_demo` database on the local server as `postgres`). The connector's URL,
CHATSITE_DEMO_CONNECTOR_URL, names the same database and the reading role (default `chatsite_demo_reader`; a
password in the URL is set on the role). That role is made LOGIN, NOSUPERUSER, NOCREATEDB, NOCREATEROLE,
NOINHERIT, NOREPLICATION, NOBYPASSRLS and a member of no role; it may CONNECT to the demo database (which
PUBLIC no longer may), USE its public schema (where PUBLIC may no longer create) and SELECT its tables
(`sales`, `products`, `regions`, `region_targets`), nothing else. Every table and column carries a comment
(COMMENT ON): text-to-SQL's schema retrieval reads them to pick the tables a question needs. Safe to run again:
it creates what is missing and puts the privileges and comments back as described.
"""

import os
from datetime import date, timedelta
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from django.core.management.base import BaseCommand, CommandError
from psycopg import sql

PRODUCTS = [("Tea", 4.5), ("Coffee", 6.0), ("Cocoa", 5.25), ("Juice", 3.75)]
REGIONS = ["North", "South", "East", "West"]
# (name, category, launched_on) beside PRODUCTS' prices; (name, manager, head office) beside REGIONS.
PRODUCT_DETAILS = {
    "Tea": ("Hot drinks", date(2019, 3, 1)),
    "Coffee": ("Hot drinks", date(2018, 6, 15)),
    "Cocoa": ("Hot drinks", date(2021, 10, 1)),
    "Juice": ("Cold drinks", date(2023, 5, 20)),
}
REGION_DETAILS = {
    "North": ("Astrid Berg", "Oslo"),
    "South": ("Mateo Rossi", "Naples"),
    "East": ("Lena Novak", "Krakow"),
    "West": ("Siobhan Kelly", "Galway"),
}
TABLES = ("sales", "products", "regions", "region_targets")
"""The demo tables, all readable by the connector's role."""

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS products (name text PRIMARY KEY, category text NOT NULL, "
    "unit_price numeric(10, 2) NOT NULL, launched_on date NOT NULL)",
    "CREATE TABLE IF NOT EXISTS regions (name text PRIMARY KEY, manager text NOT NULL, head_office text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sales (id serial PRIMARY KEY, product text NOT NULL, "
    "region text NOT NULL, amount numeric(10, 2) NOT NULL, sold_on date NOT NULL)",
    "CREATE TABLE IF NOT EXISTS region_targets (region text NOT NULL REFERENCES regions (name), "
    "month date NOT NULL, target_amount numeric(10, 2) NOT NULL, PRIMARY KEY (region, month))",
]
# Added apart from CREATE TABLE: databases seeded before these keys existed get them too.
FOREIGN_KEYS = {
    "sales_product_fkey": "ALTER TABLE sales ADD CONSTRAINT sales_product_fkey FOREIGN KEY (product) "
    "REFERENCES products (name)",
    "sales_region_fkey": "ALTER TABLE sales ADD CONSTRAINT sales_region_fkey FOREIGN KEY (region) "
    "REFERENCES regions (name)",
}
COMMENTS = {
    "sales": (
        "One row per sale (an order line) of a drink in a sales region: revenue, orders, turnover.",
        {
            "id": "Sale number.",
            "product": "Name of the product sold (products.name).",
            "region": "Sales region where it was sold (regions.name).",
            "amount": "Revenue of the sale in euros (price times quantity).",
            "sold_on": "Day of the sale.",
        },
    ),
    "products": (
        "The drinks the company sells: catalogue, category and list price.",
        {
            "name": "Product name, such as Tea or Coffee.",
            "category": "Product category: Hot drinks or Cold drinks.",
            "unit_price": "List price of one unit in euros.",
            "launched_on": "Day the product was launched.",
        },
    ),
    "regions": (
        "Sales regions (territories) and who manages them.",
        {
            "name": "Region name: North, South, East or West.",
            "manager": "Name of the regional sales manager.",
            "head_office": "City of the region's head office.",
        },
    ),
    "region_targets": (
        "Monthly revenue targets (quota, goal) per sales region for 2026.",
        {
            "region": "Sales region (regions.name).",
            "month": "First day of the month the target is for.",
            "target_amount": "Revenue the region should reach that month, in euros.",
        },
    ),
}
DEFAULT_READER = "chatsite_demo_reader"
READER_ATTRIBUTES = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS")
# Two runs at once (two test sessions, say) would collide on the same grants: they take turns.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('chatsite seed_demo_database'))"


def sample_rows() -> list[tuple]:
    """120 deterministic sales: (product, region, amount, sold_on)."""
    rows = []
    start = date(2026, 1, 1)
    for i in range(120):
        product, price = PRODUCTS[i % len(PRODUCTS)]
        region = REGIONS[(i // len(PRODUCTS)) % len(REGIONS)]
        quantity = 1 + (i * 13) % 9
        rows.append((product, region, round(price * quantity, 2), start + timedelta(days=i * 3 % 300)))
    return rows


def target_rows() -> list[tuple]:
    """Monthly targets (region, month, target_amount) for January to October 2026, deterministic."""
    return [
        (region, date(2026, month, 1), 150 + 25 * index + 10 * (month % 3))
        for index, region in enumerate(REGIONS)
        for month in range(1, 11)
    ]


def reader_of(admin_url: str, connector_url: str) -> tuple[str, str | None, str]:
    """The reading role's name and password (None: none given) and the connector URL to use.

    `connector_url` empty: the default role on the admin URL's server and database, without a password.

    Raises:
        CommandError: the connector URL is not PostgreSQL, names no role, or another database.
    """
    admin = urlsplit(admin_url)
    if not connector_url:
        host = admin.hostname or ""
        netloc = f"{DEFAULT_READER}@{host}" + (f":{admin.port}" if admin.port else "")
        return DEFAULT_READER, None, urlunsplit((admin.scheme, netloc, admin.path, admin.query, ""))
    reader = urlsplit(connector_url)
    if reader.scheme not in ("postgres", "postgresql") or not reader.username:
        raise CommandError(
            "CHATSITE_DEMO_CONNECTOR_URL must be a PostgreSQL URL naming its role (postgresql://role@host/db)."
        )
    if reader.path != admin.path:
        raise CommandError("CHATSITE_DEMO_CONNECTOR_URL must name the same database as CHATSITE_DEMO_DATABASE_URL.")
    password = unquote(reader.password) if reader.password is not None else None
    return unquote(reader.username), password, connector_url


def _ensure_role(conn: psycopg.Connection, reader: str, password: str | None, database: str) -> None:
    """Create or reset the reading role and let it (and not PUBLIC) connect to `database`."""
    role = sql.Identifier(reader)
    (admin,) = conn.execute("SELECT current_user").fetchone()
    if reader == admin:
        raise CommandError(f"The demo connector needs a role of its own, not the admin role {admin!r}.")
    found = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [reader]).fetchone()
    if found and found[0]:
        raise CommandError(
            f"The role {reader!r} is a superuser: name a role that may only read in CHATSITE_DEMO_CONNECTOR_URL."
        )
    if found is None:
        conn.execute(sql.SQL("CREATE ROLE {} {}").format(role, READER_ATTRIBUTES))
    conn.execute(sql.SQL("ALTER ROLE {} {}").format(role, READER_ATTRIBUTES))
    if password is not None:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
    memberships = conn.execute(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
        [reader],
    ).fetchall()
    for (granted,) in memberships:
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(granted), role))
    owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [database]).fetchone()
    if owner and owner[0] == reader:
        raise CommandError(f"The role {reader!r} owns the demo database: the connector's role must only read it.")
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(database), role))
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role))


def _grant_reading(conn: psycopg.Connection, reader: str) -> None:
    """In the demo database: the reading role may SELECT the demo TABLES and nothing else; PUBLIC may not
    create."""
    role = sql.Identifier(reader)
    conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
        conn.execute(sql.SQL("REVOKE ALL ON ALL {} IN SCHEMA public FROM PUBLIC, {}").format(sql.SQL(kind), role))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
    for table in TABLES:
        conn.execute(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(sql.Identifier(table), role))


def _create_tables(conn: psycopg.Connection) -> None:
    """The demo tables, their rows (when empty), keys and comments."""
    for statement in SCHEMA:
        conn.execute(statement)
    with conn.cursor() as cursor:
        if not conn.execute("SELECT 1 FROM products LIMIT 1").fetchone():
            cursor.executemany(
                "INSERT INTO products (name, category, unit_price, launched_on) VALUES (%s, %s, %s, %s)",
                [(name, *PRODUCT_DETAILS[name][:1], price, PRODUCT_DETAILS[name][1]) for name, price in PRODUCTS],
            )
        if not conn.execute("SELECT 1 FROM regions LIMIT 1").fetchone():
            cursor.executemany(
                "INSERT INTO regions (name, manager, head_office) VALUES (%s, %s, %s)",
                [(name, *REGION_DETAILS[name]) for name in REGIONS],
            )
        if not conn.execute("SELECT 1 FROM sales LIMIT 1").fetchone():
            cursor.executemany(
                "INSERT INTO sales (product, region, amount, sold_on) VALUES (%s, %s, %s, %s)", sample_rows()
            )
        if not conn.execute("SELECT 1 FROM region_targets LIMIT 1").fetchone():
            cursor.executemany(
                "INSERT INTO region_targets (region, month, target_amount) VALUES (%s, %s, %s)", target_rows()
            )
    for name, statement in FOREIGN_KEYS.items():
        if not conn.execute("SELECT 1 FROM pg_constraint WHERE conname = %s", [name]).fetchone():
            conn.execute(statement)
    for table, (comment, columns) in COMMENTS.items():
        conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(table), sql.Literal(comment)))
        for column, text in columns.items():
            conn.execute(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    sql.Identifier(table), sql.Identifier(column), sql.Literal(text)
                )
            )


class Command(BaseCommand):
    help = (
        "Create the demo sales database (CHATSITE_DEMO_DATABASE_URL) used by the SQL analyst workflow, and the "
        "read-only role the demo connector uses (CHATSITE_DEMO_CONNECTOR_URL)."
    )

    def handle(self, *args, **options) -> None:
        url = os.environ.get("CHATSITE_DEMO_DATABASE_URL", "")
        if not url.startswith(("postgres://", "postgresql://")):
            raise CommandError("Set CHATSITE_DEMO_DATABASE_URL to a PostgreSQL URL to create the demo database.")
        server, _, name = url.rpartition("/")
        reader, password, connector_url = reader_of(url, os.environ.get("CHATSITE_DEMO_CONNECTOR_URL", "").strip())
        try:
            with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=3) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                with conn.transaction():
                    conn.execute(_LOCK)
                    _ensure_role(conn, reader, password, name)
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute(_LOCK)
                _create_tables(conn)
                _grant_reading(conn, reader)
        except psycopg.Error as exc:
            where = f"{urlsplit(url).hostname or 'localhost'}/{name}"  # never the URL: it may hold a password
            raise CommandError(f"Could not create the demo database at {where}: {exc}") from exc
        self.stdout.write(
            f"Demo sales database ready: {name}, read by the role {reader} (the SQL analyst workflow reads it)."
        )
        if not os.environ.get("CHATSITE_DEMO_CONNECTOR_URL", "").strip():
            self.stdout.write(f"Set CHATSITE_DEMO_CONNECTOR_URL={connector_url} for the demo connector to use it.")
