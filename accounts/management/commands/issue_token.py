"""`manage.py issue_token`: a first API token without a browser.

    python manage.py issue_token                       # you@ccgsc.local in "My lab"
    python manage.py issue_token --email ada@example.org --org "Ada's lab"
    python manage.py issue_token --login http://127.0.0.1:8000   # also save it for `ccgsc`

Creates the user (with no usable password: set one with `manage.py changepassword` to sign in
on the web) and the organization when they do not exist, then issues a token for the
organization. The token alone goes to stdout, so `TOKEN=$(python manage.py issue_token -q)`
works; what to do next goes to stderr. Whoever can run manage.py already holds the database,
so this grants nothing new.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from accounts import services
from accounts.models import Organization, User

DEFAULT_EMAIL = "you@ccgsc.local"
DEFAULT_ORG = "My lab"


class Command(BaseCommand):
    help = "Issue an API token (creating the user and organization if needed) and print it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", default=DEFAULT_EMAIL, help=f"default {DEFAULT_EMAIL}")
        parser.add_argument(
            "--org",
            help="organization name or slug; default: the user's only organization, or "
            f"a new one named {DEFAULT_ORG!r}",
        )
        parser.add_argument("--name", default="command line", help="the token's name")
        parser.add_argument(
            "--login",
            metavar="URL",
            help="also save the server URL and token for the `ccgsc` command line",
        )
        parser.add_argument("-q", "--quiet", action="store_true", help="print the token only")

    def handle(self, *args: Any, **options: Any) -> None:
        # A database never migrated (or another DATABASE_URL than the server's) would fail
        # below with a traceback about a missing relation.
        if User._meta.db_table not in connection.introspection.table_names():
            raise CommandError(
                "the database has no tables: run `make run` (or manage.py migrate) first, "
                "with the same DATABASE_URL"
            )
        with transaction.atomic():
            user = self._user(options["email"])
            organization = self._organization(user, options["org"])
            _, raw = services.token_issue(
                organization=organization, name=options["name"], created_by=user
            )
        self.stdout.write(raw)
        if options["login"]:
            from campaigns.cli import config

            path = config.save(options["login"].rstrip("/"), raw)
        if options["quiet"]:
            return
        note = f"API token for {user.email} in {organization.name} ({organization.slug}). "
        if options["login"]:
            note += f"Saved for `ccgsc` in {path}; try `ccgsc campaign list`."
        else:
            note += "Log the command line in with:\n  ccgsc login --server URL --token TOKEN"
        self.stderr.write(note)

    def _user(self, email: str) -> User:
        email = User.objects.normalize_email(email.strip())
        if not email or "@" not in email:
            raise CommandError(f"--email {email!r} is not an email address")
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = User.objects.create_user(email, None)  # no usable password yet
        return user

    def _organization(self, user: User, wanted: str | None) -> Organization:
        mine = Organization.objects.filter(memberships__user=user).distinct()
        if wanted:
            found = mine.filter(slug=wanted).first() or mine.filter(name=wanted).first()
            if found is not None:
                return found
            if Organization.objects.filter(slug=wanted).exists():
                raise CommandError(f"{user.email} is not a member of the organization {wanted!r}")
            return services.organization_create(name=wanted, owner=user)
        orgs = list(mine[:2])
        if len(orgs) == 1:
            return orgs[0]
        if len(orgs) > 1:
            raise CommandError(
                f"{user.email} belongs to several organizations: name one with --org"
            )
        return services.organization_create(name=DEFAULT_ORG, owner=user)
