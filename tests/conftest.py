"""Suite-wide pytest configuration. Area fixtures live in each folder's own conftest.py."""

from hypothesis import settings

# No timing asserts in tests: Hypothesis's per-example deadline (200 ms by default) is one, and it
# fails property tests on a loaded 2-core box (seen: tunnel/test_tso.py at load 10). Speed is
# measured in bench/, not asserted here; example counts stay as each test sets them.
settings.register_profile("shadowmesh", deadline=None)
settings.load_profile("shadowmesh")


# Folders whose test modules share costly module-scoped fixtures (tests/e2e: one Daphne and one
# Chromium per module). Under pytest-xdist (scripts/test.sh) each such module is one unit of work,
# run on one worker, so its fixtures are set up once; every other test is sent on its own to the
# next free worker. This is the scheduler's own grouping: xdist's `xdist_group` mark does not
# group on pytest >= 9.2 (it renames the test's node id, which pytest no longer takes from there).
MODULE_UNITS = ("tests/e2e/",)


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModuleUnits(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module.startswith(MODULE_UNITS):
                return module
            return super()._split_scope(nodeid)

    return ModuleUnits(config, log)
