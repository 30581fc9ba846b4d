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


def _end_other_sessions() -> int:
    s = connection.settings_dict
    with psycopg.connect(dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"], host=s["HOST"],
                         port=s["PORT"] or None, autocommit=True) as admin:
        return len(admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall())


def _query() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def test_a_pooled_connection_whose_session_ended_is_replaced_before_it_is_used():
    assert connection.settings_dict["OPTIONS"].get("pool"), "this pass runs with the pool"
    assert _query() == 1
    connection.close()  # back to the pool, idle
    assert _end_other_sessions() >= 1  # the pool's connection among them, as a restart would
    assert _query() == 1
