"""Keeping credentials out of logs, errors, XCom and provenance.

Anything that prints or records a URL passes it through :func:`redact_url`; anything
that formats an exception from a database driver passes the text through
:func:`redact_text`, since drivers like to echo their connection string.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KV_PASSWORD = re.compile(r"(?i)\b(passw(or)?d|pwd|secret|token)\s*[=:]\s*('[^']*'|\"[^\"]*\"|[^\s,;)]+)")


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str, *secrets: str) -> str:
    """Mask URL passwords, ``password=...`` pairs and any literal secret given."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m.group(1)}=***", text)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text
