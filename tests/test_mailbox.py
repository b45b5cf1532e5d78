"""The embedded mode's mailbox: mail stays on the machine and is readable at /dev/mailbox/ by the
person at that machine (or staff), only with DEBUG on and local mail; the sign-up mail names the
product."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client

from accounts import mailbox

LOCAL = mailbox.BACKEND


def sign_up(client: Client) -> None:
    response = client.post(
        "/accounts/signup/",
        {
            "email": "new@person.test",
            "password1": "a-long-pass-1234",
            "password2": "a-long-pass-1234",
        },
    )
    assert response.status_code == 302


def test_sign_up_mail_names_the_product_and_shows_in_the_mailbox(db, settings):
    settings.DEBUG = True
    client = Client()
    sign_up(client)
    (message,) = mail.outbox
    assert message.subject.startswith("[CCGSC] ")
    assert "Hello from CCGSC" in message.body and "/accounts/confirm-email/" in message.body
    page = client.get("/dev/mailbox/")
    assert page.status_code == 200
    html = page.content.decode()
    assert str(message.subject) in html and "new@person.test" in html


def test_the_mailbox_backend_keeps_each_message_as_a_file(db, settings, tmp_path):
    settings.EMAIL_BACKEND = LOCAL
    settings.MAILBOX_DIR = tmp_path / "mail"
    settings.DEBUG = True
    mail.send_mail("First", "one", "CCGSC <noreply@localhost>", ["a@x.test"])
    mail.send_mail("Second", "two http://x.test/link", "CCGSC <noreply@localhost>", ["b@x.test"])
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 2
    assert [m.subject for m in mailbox.newest()] == ["Second", "First"]
    html = Client().get("/dev/mailbox/").content.decode()
    assert html.index("Second") < html.index("First")
    assert '<a href="http://x.test/link"' in html


@pytest.mark.parametrize(
    ("debug", "backend", "remote", "staff", "shown"),
    [
        (True, LOCAL, "127.0.0.1", False, True),
        (True, LOCAL, "::1", False, True),
        (True, LOCAL, "192.168.1.20", False, False),  # another machine on the LAN
        (True, LOCAL, "192.168.1.20", True, True),  # ...unless a staff user
        (False, LOCAL, "127.0.0.1", True, False),  # production: never
        (True, "django.core.mail.backends.smtp.EmailBackend", "127.0.0.1", True, False),
    ],
)
def test_who_may_read_the_mailbox(
    db, settings, people, tmp_path, debug, backend, remote, staff, shown
):
    settings.DEBUG = debug
    settings.EMAIL_BACKEND = backend
    settings.MAILBOX_DIR = tmp_path
    client = Client(REMOTE_ADDR=remote)
    if staff:
        people.owner.is_staff = True
        people.owner.save()
        client.force_login(people.owner)
    response = client.get("/dev/mailbox/")
    assert response.status_code == (200 if shown else 404)
