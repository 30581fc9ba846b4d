"""The models and the committed migrations agree (no forgotten `makemigrations`)."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_is_missing_a_migration():
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:
        pytest.fail(f"uncommitted model changes (exit {exc.code}):\n{out.getvalue()}")
