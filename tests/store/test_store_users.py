"""API keys are stored hashed, authenticate their user, and stop working when revoked."""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import ApiKey
from store.users import authenticate, create_key, create_user_with_key, list_keys, revoke_key


def test_key_is_hashed_and_authenticates(session: Session, pepper: str) -> None:
    user, key = create_user_with_key(session, "alice", pepper=pepper)
    session.commit()
    assert key.startswith("tnas_") and len(key) > 40

    rows = session.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert key not in stored and key[5:] not in stored
    assert rows[0]["prefix"] == key[5:13]

    found = authenticate(session, key, pepper=pepper)
    assert found is not None and found.id == user.id


@pytest.mark.parametrize("bad", ["", "tnas_", "Bearer x", "tnas_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_unknown_or_malformed_key_is_refused(session: Session, bad: str, pepper: str) -> None:
    create_user_with_key(session, "alice", pepper=pepper)
    assert authenticate(session, bad, pepper=pepper) is None


def test_same_prefix_wrong_secret_and_wrong_pepper_are_refused(session: Session, pepper: str) -> None:
    _, key = create_user_with_key(session, "alice", pepper=pepper)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert authenticate(session, tampered, pepper=pepper) is None
    assert authenticate(session, key, pepper="another-pepper") is None


def test_revoke(session: Session, pepper: str) -> None:
    user, key = create_user_with_key(session, "alice", pepper=pepper)
    second, key2 = create_key(session, user.id, pepper=pepper)
    first = session.scalars(select(ApiKey).where(ApiKey.id != second.id)).one()
    assert revoke_key(session, first.id, user_id="usr_someone_else") is False
    assert revoke_key(session, first.id, user_id=user.id) is True
    assert revoke_key(session, first.id) is False  # already revoked
    session.commit()
    assert authenticate(session, key, pepper=pepper) is None
    assert authenticate(session, key2, pepper=pepper).id == user.id
    assert [k.revoked_at is not None for k in list_keys(session, user.id)].count(True) == 1


def test_user_names_are_unique(session: Session, pepper: str) -> None:
    create_user_with_key(session, "alice", pepper=pepper)
    with pytest.raises(IntegrityError):
        create_user_with_key(session, "alice", pepper=pepper)
