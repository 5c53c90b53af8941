"""Accounts, passwords, sessions and the role matrix of the review app.

Why here and not in the app: the CLI (``belegwacht users add``) and the app must hash and check
passwords the same way, and the permission check must be one function that every page and every
write calls on the server side – hiding a button is not a permission check.

Roles:
- ``auditor`` reviews and decides (status, comment, assignment, narrow suppressions) and may
  reveal pseudonymised personal data of one item (a logged action);
- ``manager`` reads queues, items, decisions and the audit trail; decides nothing and sees
  personal data only as pseudonyms;
- ``admin`` manages users, switches rules on/off, revokes suppressions; sees pseudonyms.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from detect.errors import UserError

ROLES: tuple[str, ...] = ("auditor", "manager", "admin")
ALL = frozenset(ROLES)

PERMISSIONS: dict[str, frozenset[str]] = {
    "view": ALL,                                # queue, item, runs, rules, audit trail
    "export": ALL,                              # filtered queue with decisions
    "decide": frozenset({"auditor"}),           # status + comment, single and bulk
    "assign": frozenset({"auditor"}),           # hand an item to a colleague
    "suppress": frozenset({"auditor"}),         # narrowly scoped, with a "no finding" decision
    "manage_suppressions": frozenset({"admin"}),  # list + revoke
    "manage_users": frozenset({"admin"}),
    "manage_rules": frozenset({"admin"}),       # rules on/off
    "reveal_personal": frozenset({"auditor"}),  # clear names of one item, logged
}
"""The role matrix. Keep docs/app.md in sync."""

MIN_PASSWORD_LENGTH = 10
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{2,64}$")
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("belegwacht-dummy-password")


class PermissionDenied(UserError):
    """The signed-in role may not do this (checked on the server, never only in the UI)."""

    exit_code = 5


class AuthError(UserError):
    """Invalid account data (user name, password, role)."""


@dataclass
class AppUser:
    """The signed-in person of one browser session."""

    username: str
    role: str
    display_name: str = ""
    via: str = "local"          # local | oidc
    login_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    @property
    def label(self) -> str:
        return self.display_name or self.username


def can(role: str | None, action: str) -> bool:
    """True when ``role`` may do ``action``; unknown actions are denied."""
    return role is not None and role in PERMISSIONS.get(action, frozenset())


def require(user: AppUser | None, action: str) -> AppUser:
    """Raise ``PermissionDenied`` unless a signed-in user's role allows ``action``."""
    if user is None:
        raise PermissionDenied("not signed in")
    if not can(user.role, action):
        raise PermissionDenied(f"role {user.role!r} may not {action}")
    return user


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}", hint=f"roles: {', '.join(ROLES)}")
    return role


def add_user(store: Any, username: str, password: str, role: str = "auditor",
             display_name: str | None = None) -> None:
    """Create a local account with an argon2id hash; the clear password is never stored."""
    if not _USERNAME.match(username or ""):
        raise AuthError(f"invalid user name {username!r}",
                        hint="2-64 characters: letters, digits, . _ @ -")
    check_role(role)
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AuthError(f"password too short (at least {MIN_PASSWORD_LENGTH} characters)")
    if store.get_user(username):
        raise AuthError(f"user {username!r} exists already",
                        hint="use `belegwacht users set-role` to change the role")
    store.add_user(username, hash_password(password), role, display_name)


def _active(row: dict[str, Any] | None) -> bool:
    return bool(row) and bool(row.get("active", True)) and row.get("role") in ROLES


def authenticate(store: Any, username: str, password: str) -> AppUser | None:
    """The user for a correct name/password of an active account, else None (no hint why)."""
    row = store.get_user((username or "").strip())
    if not row or not row.get("password_hash"):
        verify_password(_DUMMY_HASH, password or "")
        return None
    if not verify_password(row["password_hash"], password or "") or not _active(row):
        return None
    return AppUser(row["username"], row["role"], row.get("display_name") or "", "local")


def oidc_user(store: Any, claims: dict[str, Any]) -> AppUser | None:
    """Map an OIDC identity to the local user row that carries its role.

    Tries ``preferred_username``, ``email`` and ``sub`` in that order; the identity provider
    proves who someone is, the local row (created by an admin) says what they may do.
    """
    for claim in ("preferred_username", "email", "sub"):
        value = claims.get(claim)
        if not value:
            continue
        row = store.get_user(str(value))
        if _active(row):
            return AppUser(row["username"], row["role"],
                           row.get("display_name") or str(claims.get("name") or ""), "oidc")
    return None


MAX_FAILURES = 5
LOCKOUT_MINUTES = 15


def locked_out(store: Any, username: str, now: float | None = None) -> bool:
    """True after ``MAX_FAILURES`` failed sign-ins for this name within ``LOCKOUT_MINUTES``.

    Counted from the store's access log, so the limit holds across browser sessions and app
    processes; a successful sign-in does not reset it (the window simply passes).
    """
    from datetime import datetime

    now = time.time() if now is None else now
    since = now - LOCKOUT_MINUTES * 60
    failures = 0
    for entry in store.access_log(500):
        ts = datetime.fromisoformat(str(entry["ts"])).timestamp()
        if ts < since:
            break                                   # newest first
        if entry["action"] == "login_failed" and entry["user"] == username:
            failures += 1
    return failures >= MAX_FAILURES


def is_expired(user: AppUser, timeout_minutes: int, now: float | None = None) -> bool:
    """Idle timeout: a session expires ``timeout_minutes`` after the last request."""
    now = time.time() if now is None else now
    return timeout_minutes > 0 and now - user.last_seen > timeout_minutes * 60
