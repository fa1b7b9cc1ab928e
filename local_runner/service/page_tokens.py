"""Page tokens of the list methods: the filter the first page was asked with and where the page ended.

A token is URL-safe base64 of a JSON pair, so the next call can refuse a changed filter (as the real
service does) and carry on after the last item returned. Each list method checks its own position.
"""

from __future__ import annotations

import base64
import binascii
import json

from local_runner.errors import InvalidArgument

INVALID = "Invalid page token."


def encode_page_token(filter_text: str, position: object) -> str:
    """The ``next_page_token`` for a page asked with ``filter_text`` that ended at ``position`` (JSON)."""
    raw = json.dumps([filter_text, position]).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str, filter_text: str) -> object:
    """The position a token carries, for a call asked with ``filter_text``.

    Raises:
        InvalidArgument: the token is not one of ours, or the filter changed since the first page.
    """
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidArgument(INVALID) from None
    if not isinstance(decoded, list) or len(decoded) != 2 or not isinstance(decoded[0], str):
        raise InvalidArgument(INVALID)
    if decoded[0] != filter_text:
        raise InvalidArgument("The filter must not change between pages; ask for page 1 with the new filter.")
    return decoded[1]
