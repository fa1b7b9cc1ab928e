"""Emails: the messages the worker sends, and an outbox directory standing in for an email provider.

Each sent message is one ``.eml`` file (RFC 5322, readable by any mail client). In a real deployment,
replace :meth:`Outbox.send` with your provider's API call (SendGrid, SES, Gmail API...).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from sample_worker.files import write_atomically

SENDER = "Sample App <hello@example.com>"
#: Header that names the task which sent a message, for tracing a message back to its delivery.
TASK_HEADER = "X-Sample-Task"


_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EMAIL = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")


@dataclass(frozen=True)
class User:
    """A user who just signed up."""

    user_id: str
    email: str
    name: str

    @classmethod
    def from_json(cls, payload: Any) -> User:
        """Validates a ``{"user_id", "email", "name"}`` object (from a request or a task).

        Raises:
            ValueError: A field is missing or malformed; the message names it.
        """
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object with user_id, email and name")
        user_id, email, name = (payload.get(key) for key in ("user_id", "email", "name"))
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            raise ValueError(f"user_id must match {_USER_ID.pattern}, got {user_id!r}")
        if not isinstance(email, str) or not _EMAIL.fullmatch(email):
            raise ValueError(f"email must be an email address, got {email!r}")
        if not isinstance(name, str) or not 0 < len(name) <= 100 or not name.isprintable():
            raise ValueError(f"name must be 1-100 printable characters, got {name!r}")
        return cls(user_id, email, name)

    def to_json(self) -> dict[str, str]:
        """The task payload for this user."""
        return {"user_id": self.user_id, "email": self.email, "name": self.name}


def welcome_email(user: User) -> EmailMessage:
    """The message sent right after sign-up."""
    return _message(
        user,
        "Welcome to Sample App",
        f"Hi {user.name},\n\nthanks for signing up. Your account is ready.\n",
    )


def reminder_email(user: User) -> EmailMessage:
    """The message sent a day after sign-up."""
    return _message(
        user,
        "Finish setting up your account",
        f"Hi {user.name},\n\nyou signed up yesterday: add a profile picture to finish your account.\n",
    )


def digest_email(user: User, week: str) -> EmailMessage:
    """The weekly digest, for the week starting on ``week`` (``YYYY-MM-DD``)."""
    return _message(
        user,
        f"Your week at Sample App ({week})",
        f"Hi {user.name},\n\nhere is what happened this week.\n",
    )


def _message(user: User, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = Address(display_name=user.name, addr_spec=user.email)
    message["Subject"] = subject
    message.set_content(text)
    return message


class Outbox:
    """Sends email by writing it to a directory, one ``.eml`` file per message.

    Args:
        directory: Where messages go; created if missing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def send(self, message: EmailMessage, *, task: str) -> Path:
        """Stamps ``Date`` and ``Message-ID`` and writes the message atomically; returns its file.

        Args:
            message: The message to send.
            task: The task sending it (``queue/task-name``), recorded in :data:`TASK_HEADER`.
        """
        now = datetime.now(UTC)
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid(domain="example.com")
        message[TASK_HEADER] = task
        data = message.as_bytes(policy=policy.SMTP)
        return write_atomically(self.directory / f"{now:%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:8]}.eml", data)

    def messages(self) -> list[EmailMessage]:
        """Every sent message, oldest first."""
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(path.read_bytes()) for path in sorted(self.directory.glob("*.eml"))]
