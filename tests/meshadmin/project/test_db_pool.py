"""PostgreSQL's connection pool hands out only connections that still work.

A PostgreSQL restart ends every session: the pool's idle connections are then dead, and without a
check the next request that takes one fails (the dashboard answered 500 to the first change made
after PostgreSQL came back). Ending the pool's sessions from another session does the same to
them, without stopping the suite's database."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _end_sessions(pids: list[int]) -> int:
    s = connection.settings_dict
    with psycopg.connect(dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"], host=s["HOST"],
                         port=s["PORT"] or None, autocommit=True) as admin:
        return sum(admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0] for pid in pids)


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_a_pooled_connection_whose_session_ended_is_replaced_before_it_is_used():
    assert connection.settings_dict["OPTIONS"].get("pool"), "this pass runs with the pool"
    _backend_pid()
    connection.close()  # back to the pool, idle
    # every idle connection of the pool (psycopg_pool keeps them in `_pool`) ended, as a PostgreSQL
    # restart ends them; only those: connections other threads of the suite hold stay as they are
    idle = [c.info.backend_pid for c in connection.pool._pool]
    assert idle and _end_sessions(idle) == len(idle)
    assert _backend_pid() not in idle  # a new connection, not a failure
