"""pytest setup for the whole repository (the unit tests' paths and fixtures are in tests/conftest.py).

The notebooks, collected by nbval from notebooks/*.ipynb (``--nbval-lax``), are marked ``slow`` here,
at the root, so that ``pytest -m "not slow"`` leaves them out whichever folders are named: a hook in
tests/conftest.py would not be loaded by ``pytest notebooks`` alone."""

import pytest


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
