"""Suite-wide pytest configuration. Area fixtures live in each folder's own conftest.py."""
