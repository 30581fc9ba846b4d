"""Races against real PostgreSQL: token consumption and overlay IP allocation under concurrency.

Threads are released together by a barrier; each uses its own client and database connection.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from django.db import connection

from meshadmin.mesh.models import EnrollmentToken, Node

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _race(jobs):
    """Run the callables at the same moment, one thread each; returns their results in order."""
    barrier = threading.Barrier(len(jobs))

    def run(job):
        try:
            barrier.wait(timeout=60)
            return job()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


def _enroll(client, token, ident):
    return client.enroll(token, ident, "racer")


def _enroll_status(client, token, ident):
    return _enroll(client, token, ident).status_code


def test_the_database_really_is_postgresql():
    assert connection.vendor == "postgresql"


def test_two_enrollments_racing_with_one_one_time_token_let_exactly_one_through(
    api_factory, make_token, identity_factory
):
    for _ in range(3):  # a few rounds: a lost race must never slip through
        token = make_token()
        idents = [identity_factory(), identity_factory()]
        clients = [api_factory(), api_factory()]
        codes = _race([partial(_enroll_status, c, token, i) for c, i in zip(clients, idents, strict=True)])
        assert sorted(codes) == [201, 403]
    assert Node.objects.count() == 3
    assert list(EnrollmentToken.objects.values_list("uses_left", flat=True)) == [0, 0, 0]


def test_an_n_use_token_raced_by_twice_as_many_enrollments_admits_exactly_n(
    api_factory, make_token, identity_factory
):
    token = make_token(uses=5)
    jobs = [partial(_enroll_status, api_factory(), token, identity_factory()) for _ in range(10)]
    codes = _race(jobs)
    assert sorted(codes) == [201] * 5 + [403] * 5
    assert EnrollmentToken.objects.get().uses_left == 0


def test_fifty_concurrent_enrollments_get_fifty_distinct_addresses(api_factory, make_token, identity_factory):
    tokens = [make_token() for _ in range(50)]
    idents = [identity_factory() for _ in range(50)]
    jobs = [partial(_enroll, api_factory(), t, i) for t, i in zip(tokens, idents, strict=True)]
    responses = _race(jobs)
    assert [r.status_code for r in responses] == [201] * 50, [
        r.content for r in responses if r.status_code != 201
    ]
    addresses = {r.json()["overlay_ip"] for r in responses}
    assert len(addresses) == 50
    assert addresses == {f"10.10.10.{i}" for i in range(1, 51)}
    assert Node.objects.count() == 50
