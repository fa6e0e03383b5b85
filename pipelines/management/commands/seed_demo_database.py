"""`manage.py seed_demo_database`: create the demo sales database the "SQL analyst" workflow reads.

It lives at CHATSITE_DEMO_DATABASE_URL (a PostgreSQL URL; the Makefile defaults it to a `chatsite_demo`
database on the local server). Safe to run again: it creates what is missing and leaves the rest.
"""

import os
from datetime import date, timedelta

import psycopg
from django.core.management.base import BaseCommand, CommandError

PRODUCTS = [("Tea", 4.5), ("Coffee", 6.0), ("Cocoa", 5.25), ("Juice", 3.75)]
REGIONS = ["North", "South", "East", "West"]


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


class Command(BaseCommand):
    help = "Create the demo sales database (CHATSITE_DEMO_DATABASE_URL) used by the SQL analyst workflow."

    def handle(self, *args, **options) -> None:
        url = os.environ.get("CHATSITE_DEMO_DATABASE_URL", "")
        if not url.startswith(("postgres://", "postgresql://")):
            raise CommandError("Set CHATSITE_DEMO_DATABASE_URL to a PostgreSQL URL to create the demo database.")
        server, _, name = url.rpartition("/")
        try:
            with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=3) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                    conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS sales (id serial PRIMARY KEY, product text NOT NULL, "
                    "region text NOT NULL, amount numeric(10, 2) NOT NULL, sold_on date NOT NULL)"
                )
                if not conn.execute("SELECT 1 FROM sales LIMIT 1").fetchone():
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            "INSERT INTO sales (product, region, amount, sold_on) VALUES (%s, %s, %s, %s)",
                            sample_rows(),
                        )
        except psycopg.Error as exc:
            raise CommandError(f"Could not create the demo database at {server}/{name}: {exc}") from exc
        self.stdout.write(f"Demo sales database ready: {name} (the SQL analyst workflow reads it).")
