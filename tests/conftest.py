"""Suite-wide pytest configuration. Area fixtures live in each folder's own conftest.py."""

from hypothesis import settings

# No timing asserts in tests: Hypothesis's per-example deadline (200 ms by default) is one, and it
# fails property tests on a loaded 2-core box (seen: tunnel/test_tso.py at load 10). Speed is
# measured in bench/, not asserted here; example counts stay as each test sets them.
settings.register_profile("shadowmesh", deadline=None)
settings.load_profile("shadowmesh")
