"""AtMostEvery: the once-per-interval gate of the server's side-of-the-request housekeeping
(services/audit.py prune_if_due, services/ephemeral.py reap_if_due)."""

import threading

from meshadmin.mesh.services.throttle import AtMostEvery


def test_due_the_first_time_then_once_per_interval_and_again_after_a_reset():
    gate = AtMostEvery(60.0)
    assert gate.due(1000.0)
    assert not gate.due(1000.0) and not gate.due(1059.9)
    assert gate.due(1060.0)
    assert not gate.due(1061.0)
    gate.reset()
    assert gate.due(1061.0)


def test_many_threads_at_once_get_one_true():
    gate = AtMostEvery(60.0)
    results: list[bool] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        results.append(gate.due(5.0))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
