"""`manage.py issue_token`: a first API token without a browser."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiToken, Membership, Organization, User

ROOT = Path(__file__).resolve().parent.parent


def issue(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("issue_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


@pytest.mark.django_db
def test_creates_user_and_organization_then_reuses_them():
    token, note = issue()
    found = ApiToken.authenticate(token)
    assert found is not None and found.organization.name == "My lab"
    user = User.objects.get(email="you@ccgsc.local")
    assert not user.has_usable_password()
    assert Membership.objects.get(user=user).role == Membership.Role.OWNER
    assert "ccgsc login --server URL --token TOKEN" in note

    again, _ = issue("-q")
    assert again != token
    again_found = ApiToken.authenticate(again)
    assert again_found is not None and again_found.organization == found.organization
    assert Organization.objects.count() == 1 and User.objects.count() == 1


@pytest.mark.django_db
def test_named_organization_and_existing_member(people):
    token, _ = issue("--email", people.owner.email, "--org", people.org.slug)
    found = ApiToken.authenticate(token)
    assert found is not None and found.organization == people.org
    # Someone else's organization is not joined by naming it.
    with pytest.raises(CommandError, match="not a member"):
        issue("--email", "stranger@example.org", "--org", people.org.slug)


@pytest.mark.django_db
def test_login_saves_the_cli_config(tmp_path, monkeypatch):
    path = tmp_path / "ccgsc.json"
    monkeypatch.setenv("CCGSC_CONFIG", str(path))
    token, note = issue("--login", "http://127.0.0.1:8104/")
    assert json.loads(path.read_text()) == {"server": "http://127.0.0.1:8104", "token": token}
    assert str(path) in note


def test_a_database_without_tables_says_to_migrate_first(tmp_path):
    # A real empty database (an SQLite file nothing migrated), in a process of its own.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_PATH")}
    env["SQLITE_PATH"] = str(tmp_path / "empty.sqlite3")
    done = subprocess.run(
        [sys.executable, "manage.py", "issue_token"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "the database has no tables: run `make run` (or manage.py migrate)" in done.stderr
    assert "Traceback" not in done.stderr
