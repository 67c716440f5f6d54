"""Users and their API keys.

A key looks like ``tnas_<43 urlsafe chars>`` (32 random bytes). The database keeps
``prefix`` (the first 8 characters after ``tnas_``, indexed, to find the row) and
``hash`` = HMAC-SHA256(pepper, key) in hex, compared in constant time. The keys are
random, so a fast keyed hash is as strong as a slow one and costs microseconds per
request; the pepper (``THRIFTY_API_KEY_PEPPER``) keeps a stolen database dump from
being checked offline.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.models import ApiKey, User
from store.settings import get_settings
from store.types import utcnow
from store.upsert import rowcount

KEY_SCHEME = "tnas_"
PREFIX_LENGTH = 8


def _pepper(pepper: str | None) -> bytes:
    if pepper is None:
        pepper = get_settings().api_key_pepper.get_secret_value()
    return pepper.encode()


def hash_key(key: str, pepper: str | None = None) -> str:
    """HMAC-SHA256 of ``key`` under the pepper (default: the settings' pepper), in hex."""
    return hmac.new(_pepper(pepper), key.encode(), hashlib.sha256).hexdigest()


def key_prefix(key: str) -> str | None:
    """The lookup prefix of ``key``, or None if it is not a ``tnas_`` key."""
    if not key.startswith(KEY_SCHEME) or len(key) < len(KEY_SCHEME) + PREFIX_LENGTH:
        return None
    return key[len(KEY_SCHEME) : len(KEY_SCHEME) + PREFIX_LENGTH]


def create_key(session: Session, user_id: str, *, pepper: str | None = None) -> tuple[ApiKey, str]:
    """Add a new API key for ``user_id``; return the row and the plaintext key (shown once)."""
    plaintext = KEY_SCHEME + secrets.token_urlsafe(32)
    row = ApiKey(user_id=user_id, prefix=key_prefix(plaintext), hash=hash_key(plaintext, pepper))
    session.add(row)
    session.flush()
    return row, plaintext


def create_user_with_key(session: Session, name: str, *, pepper: str | None = None) -> tuple[User, str]:
    """Create user ``name`` (unique) with one API key; return the user and the plaintext key.

    A taken name raises ``sqlalchemy.exc.IntegrityError`` at the flush.
    """
    user = User(name=name)
    session.add(user)
    session.flush()
    _, plaintext = create_key(session, user.id, pepper=pepper)
    return user, plaintext


def authenticate(session: Session, key: str, *, pepper: str | None = None) -> User | None:
    """The user owning ``key``, or None for an unknown, malformed or revoked key."""
    prefix = key_prefix(key)
    if prefix is None:
        return None
    digest = hash_key(key, pepper)
    candidates = session.execute(  # key and user in one round trip: this runs on every request
        select(ApiKey.hash, User).join(User, User.id == ApiKey.user_id)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).all()
    for key_hash, user in candidates:
        if hmac.compare_digest(key_hash, digest):
            return user
    return None


def revoke_key(session: Session, key_id: str, *, user_id: str | None = None) -> bool:
    """Revoke key ``key_id`` (of ``user_id`` if given); False if there was no live key to revoke."""
    stmt = update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    if user_id is not None:
        stmt = stmt.where(ApiKey.user_id == user_id)
    result = session.execute(stmt.values(revoked_at=utcnow()).execution_options(synchronize_session="fetch"))
    return rowcount(result) == 1


def get_user_by_name(session: Session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).one_or_none()


def list_keys(session: Session, user_id: str) -> list[ApiKey]:
    """The user's keys, newest first (revoked ones included, with ``revoked_at`` set)."""
    stmt = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc(), ApiKey.id)
    return list(session.scalars(stmt))
