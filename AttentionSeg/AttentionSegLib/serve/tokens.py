"""Bearer tokens: one per user, kept by the server only as their SHA-256.

The tokens file, written by the administrator (``attentionseg serve-token add USER --tokens FILE``
makes a token, prints it once and appends ``USER sha256:HEX``): one user per line, ``#``
comments. A token is 32 random bytes (urlsafe base64), so one SHA-256 suffices (no password to
stretch). For a single user, ``ATTENTIONSEG_TOKEN`` in the server's environment is that user's
token (user ``default``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError

__all__ = ["TOKEN_VARIABLE", "hash_token", "new_token", "read_tokens", "add_user", "server_tokens", "user_of"]

TOKEN_VARIABLE = "ATTENTIONSEG_TOKEN"
_USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def read_tokens(path: str | os.PathLike) -> dict[str, str]:
    """``{hash: user}`` of a tokens file.

    Raises:
        AttentionSegError: a missing file, or a line that is not ``USER sha256:HEX`` (named by number).
    """
    path = Path(path)
    if not path.is_file():
        raise AttentionSegError(f"{path}: tokens file not found")
    table: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not _USER.match(parts[0]) or not _HASH.match(parts[1]):
            raise AttentionSegError(
                f"{path}: line {number} is not 'USER sha256:HEX' (make entries with serve-token add)"
            )
        table[parts[1]] = parts[0]
    if not table:
        raise AttentionSegError(f"{path}: no user in the tokens file")
    return table


def add_user(path: str | os.PathLike, user: str) -> str:
    """Append a new token of ``user`` to the tokens file (created if missing); returns the token.

    Raises:
        AttentionSegError: a bad user name, or one the file already has.
    """
    path = Path(path)
    if not _USER.match(user):
        raise AttentionSegError(f"{user!r}: a user name is 1-64 letters, digits or ._@-")
    existing = read_tokens(path) if path.is_file() and path.read_text().strip() else {}
    if user in existing.values():
        raise AttentionSegError(f"{path}: user {user!r} has a token already; remove its line to replace it")
    token = new_token()
    text = (
        path.read_text()
        if path.is_file()
        else "# attentionseg serve tokens: USER sha256:HEX (made by serve-token add)\n"
    )
    if text and not text.endswith("\n"):
        text += "\n"
    from AttentionSegLib.io.atomic import write_text_atomic

    write_text_atomic(path, text + f"{user} {hash_token(token)}\n")
    os.chmod(path, 0o600)
    return token


def server_tokens(tokens_file: str | os.PathLike | None) -> dict[str, str]:
    """The table a server checks: the tokens file's, or ``ATTENTIONSEG_TOKEN``'s single user.

    Raises:
        AttentionSegError: neither is given (a server never runs open).
    """
    if tokens_file is not None:
        return read_tokens(tokens_file)
    token = os.environ.get(TOKEN_VARIABLE, "")
    if token:
        return {hash_token(token): "default"}
    raise AttentionSegError(f"no tokens: give --tokens FILE (serve-token add) or set {TOKEN_VARIABLE}")


def user_of(authorization: str | None, table: dict[str, str]) -> str | None:
    """The user of an ``Authorization: Bearer TOKEN`` header, or None (missing, malformed, unknown)."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    digest = hash_token(authorization[len("Bearer ") :].strip())
    for known, user in table.items():  # constant time per entry: no timing hint of a near match
        if hmac.compare_digest(known, digest):
            return user
    return None
