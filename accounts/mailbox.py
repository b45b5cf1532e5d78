"""The embedded mode's mailbox: with no mail server configured (no EMAIL_HOST), mail the
platform sends (sign-up confirmations, password resets, notifications) is kept as .eml files
under MAILBOX_DIR and shown at /dev/mailbox/, instead of scrolling past in the console between
access logs. The console still gets one line per message saying where to read it.

Who may read it: the mails hold sign-in links for every account, so the page exists only with
DEBUG on and this backend (or the tests' locmem one) in use, and answers only a browser on the
server's own machine (loopback) or a staff user; everyone else gets the 404 page.
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.http import HttpRequest

logger = logging.getLogger(__name__)

BACKEND = "accounts.mailbox.MailboxBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"
SHOWN = 50  # newest messages listed


def mailbox_dir() -> Path:
    return Path(getattr(settings, "MAILBOX_DIR", Path(settings.BASE_DIR) / "var" / "mail"))


class MailboxBackend(BaseEmailBackend):
    """Writes each message to MAILBOX_DIR/<time>-<id>.eml (one file per message: nothing to
    lock, and several processes may send at once)."""

    def send_messages(self, email_messages: Sequence[mail.EmailMessage]) -> int:
        folder = mailbox_dir()
        folder.mkdir(parents=True, exist_ok=True)
        sent = 0
        for message in email_messages:
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.eml"
            (folder / name).write_bytes(message.message().as_bytes())
            logger.info(
                "Mail to %s: %r (read it at /dev/mailbox/)",
                ", ".join(message.recipients()),
                message.subject,
            )
            sent += 1
        return sent


@dataclass(frozen=True)
class Mail:
    sender: str
    to: str
    subject: str
    date: str
    body: str


def _from_bytes(raw: bytes) -> Mail:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    part = parsed.get_body(preferencelist=("plain", "html"))
    body = part.get_content() if part is not None else ""
    return Mail(
        sender=str(parsed.get("From", "")),
        to=str(parsed.get("To", "")),
        subject=str(parsed.get("Subject", "")),
        date=str(parsed.get("Date", "")),
        body=body,
    )


def in_use() -> bool:
    """Whether mail stays on this machine (the mailbox backend, or locmem in tests)."""
    return settings.EMAIL_BACKEND in (BACKEND, LOCMEM)


def may_read(request: HttpRequest) -> bool:
    if not (settings.DEBUG and in_use()):
        return False
    if getattr(request.user, "is_staff", False):
        return True
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def newest() -> list[Mail]:
    """The newest messages first."""
    if settings.EMAIL_BACKEND == LOCMEM:
        outbox = getattr(mail, "outbox", [])
        return [_from_bytes(m.message().as_bytes()) for m in reversed(outbox[-SHOWN:])]
    folder = mailbox_dir()
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.eml"), reverse=True)[:SHOWN]
    return [_from_bytes(path.read_bytes()) for path in files]
