"""PostgreSQL's connection pool hands out only connections that still work.

A PostgreSQL restart ends every session: the pool's idle connections are then dead, and without a
check the next request that takes one fails (the dashboard answered 500 to the first change made
after PostgreSQL came back). Here a pool made with the server's own pool settings (the check among
them) gets an idle connection ended from another session, as a restart ends them; the suite's own
pool is left alone (other threads of the suite hold connections of it)."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def _conninfo() -> str:
    s = connection.settings_dict
    return psycopg.conninfo.make_conninfo(dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"],
                                          host=s["HOST"], port=s["PORT"] or None)


def test_an_idle_connection_whose_session_ended_is_replaced_before_it_is_handed_out():
    options = connection.settings_dict["OPTIONS"]["pool"]
    assert options, "this pass runs with the pool"
    with ConnectionPool(_conninfo(), min_size=1, max_size=2, timeout=10, open=True,
                        check=options.get("check")) as pool:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(_conninfo(), autocommit=True) as admin:  # as a restart would
            assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
            assert conn.info.backend_pid != pid
