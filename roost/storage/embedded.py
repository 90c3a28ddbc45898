"""An embedded PostgreSQL under the data directory, for set-ups with no database.

pgserver ships PostgreSQL binaries as a wheel; it initialises a cluster on first
use and serves it on a Unix socket inside the cluster's folder. Starting it is
blocking work, so callers run it in a thread.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

DATABASE_NAME = "roost"


def start_embedded_postgres(data_dir: str) -> tuple[str, Any]:
    """Start (or reuse) the cluster in `data_dir/postgres`; return (dsn, server).

    The server object must be kept alive: pgserver stops PostgreSQL when the
    last handle is cleaned up.
    """
    import pgserver  # imported lazily: it is heavy and only needed here

    pgdata = os.path.abspath(os.path.join(data_dir, "postgres"))
    os.makedirs(pgdata, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    admin_dsn = server.get_uri("postgres")
    _ensure_database(admin_dsn, DATABASE_NAME)
    logger.info("embedded PostgreSQL running in %s", pgdata)
    return server.get_uri(DATABASE_NAME), server


def _ensure_database(admin_dsn: str, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
    finally:
        conn.close()
