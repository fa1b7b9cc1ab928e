"""How the console shows a task's body: JSON pretty-printed, text as is, anything else as base64."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

#: Bytes of a body the task page shows at most.
MAX_SHOWN_BYTES = 64 * 1024


@dataclass(frozen=True)
class Payload:
    """A body ready to show (the template escapes ``text``)."""

    #: ``empty``, ``json``, ``text`` or ``binary`` (base64).
    kind: str
    text: str
    size: int
    #: Whether ``text`` shows only the first :data:`MAX_SHOWN_BYTES` bytes.
    truncated: bool


def decode_payload(body: bytes) -> Payload:
    """Decode a task body for display, capped at :data:`MAX_SHOWN_BYTES`."""
    if not body:
        return Payload("empty", "", 0, False)
    shown = body[:MAX_SHOWN_BYTES]
    truncated = len(body) > MAX_SHOWN_BYTES
    try:
        text = shown.decode("utf-8")
    except UnicodeDecodeError as error:
        if not truncated or error.start < len(shown) - 3:  # not just a character cut in two by the cap
            return Payload("binary", base64.b64encode(shown).decode("ascii"), len(body), truncated)
        text = shown[: error.start].decode("utf-8")
    if not truncated:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            if isinstance(document, dict | list):
                return Payload("json", json.dumps(document, indent=2, ensure_ascii=False), len(body), False)
    return Payload("text", text, len(body), truncated)
