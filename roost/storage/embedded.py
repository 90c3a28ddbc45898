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
    _forget_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    admin_dsn = server.get_uri("postgres")
    _ensure_database(admin_dsn, DATABASE_NAME)
    logger.info("embedded PostgreSQL running in %s", pgdata)
    return server.get_uri(DATABASE_NAME), server


def _forget_dead_handles(pgdata: str) -> None:
    """Drop the pids of processes that are gone from pgserver's list of handles.

    pgserver stops PostgreSQL when the last process holding a handle cleans
    up, and keeps that list in a file. A Roost killed with SIGKILL never
    cleans up, so its pid stayed listed: the next Roost reused the running
    postmaster (right) but, at its clean stop, saw another handle still
    listed and left PostgreSQL running for ever. Roost owns this postmaster's
    life, so a listed pid counts only while its process still runs (a pid
    reused by an unrelated process is told apart by start time: it began after
    the list was last written).
    """
    import json

    import psutil

    path = os.path.join(pgdata, ".handle_pids.json")
    try:
        with open(path) as f:
            listed = json.load(f)
        written = os.path.getmtime(path)
    except (OSError, ValueError):
        return
    if not isinstance(listed, list):
        listed = []
    alive = [pid for pid in listed if isinstance(pid, int) and _started_before(pid, written, psutil)]
    if alive != listed:
        logger.info("embedded PostgreSQL: forgetting handles of exited processes %s",
                    sorted(set(listed) - set(alive)))
        with open(path, "w") as f:
            json.dump(alive, f)


def _started_before(pid: int, moment: float, psutil: Any) -> bool:
    try:
        return bool(psutil.Process(pid).create_time() <= moment + 1)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


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
