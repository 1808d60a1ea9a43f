"""Bearer tokens: a user token reads and writes its own user's images and results; an admin token all.

Tokens are random (``secrets``), shown once when issued, and stored only as SHA-256 digests in
``GRAYWAVE_API_TOKENS_FILE`` (mode 0600). A presented token is hashed and compared with every
stored digest by ``hmac.compare_digest``; tokens are never logged.

    graywave token issue alice          # a token for user alice
    graywave token issue ops --admin    # an admin token labelled "ops"
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from graywave.errors import InvalidInput
from graywave.storage.layout import USER_ID_PATTERN


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, or the owner of one user's data."""

    label: str
    user_id: str | None
    admin: bool

    def may_access(self, user_id: str) -> bool:
        return self.admin or self.user_id == user_id


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The stored digests, read again whenever the file changes (a new token works at once)."""

    def __init__(self, path: Path):
        self.path = path
        self._version: float | None = None
        self._entries: list[tuple[str, Principal]] = []

    def _refresh(self) -> None:
        version = self.path.stat().st_mtime_ns if self.path.exists() else None
        if version != self._version:
            entries = json.loads(self.path.read_text())["tokens"] if version is not None else []
            self._entries = [(e["sha256"], Principal(e["label"], e.get("user_id"), e["admin"])) for e in entries]
            self._version = version

    def authenticate(self, token: str) -> Principal | None:
        self._refresh()
        presented = _digest(token)
        found = None
        for digest, principal in self._entries:  # every entry, so the time does not depend on the match
            if hmac.compare_digest(digest, presented):
                found = principal
        return found


def issue_token(path: Path, label: str, admin: bool) -> str:
    """Create a token, store its digest, and return the token (the only time it is seen)."""
    if not admin and not USER_ID_PATTERN.match(label):
        raise InvalidInput(f"user id {label!r} does not match [A-Za-z0-9_-]{{1,64}}")
    token = f"gw_{secrets.token_urlsafe(32)}"
    data = json.loads(path.read_text()) if path.exists() else {"tokens": []}
    data["tokens"].append(
        {"sha256": _digest(token), "label": label, "user_id": None if admin else label, "admin": admin}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data, indent=2))
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    return token
