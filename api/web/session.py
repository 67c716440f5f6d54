"""The dashboard's sign-in: the API key in a cookie, and a CSRF token for every form that changes state.

* Cookie ``thrifty_key`` (``api.deps.SESSION_COOKIE``) holds the API key the person pasted:
  HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Secure
  when the page was served over https, 12 hours. It is checked with
  ``store.users.authenticate`` on every request, so a revoked key signs the browser out.
* CSRF token: HMAC-SHA256(pepper, "csrf:" + key) in hex, a hidden field of every POST form.
  Another site cannot compute it (it knows neither the key nor the pepper); it is the same
  for the whole session (the key's lifetime) and needs no server-side storage. POSTs
  without it, or with another key's, are refused with 403.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Form, Request, Response

from api.deps import SESSION_COOKIE, SessionDep, SettingsDep
from api.errors import ApiError
from api.web.render import LoginRequired
from store.models import User
from store.settings import Settings
from store.users import authenticate

COOKIE_MAX_AGE_S = 12 * 3600


class CsrfRejected(ApiError):
    status_code, code = 403, "csrf_failed"


def csrf_token_of(key: str, settings: Settings) -> str:
    pepper = settings.api_key_pepper.get_secret_value().encode()
    return hmac.new(pepper, b"csrf:" + key.encode(), hashlib.sha256).hexdigest()


def set_login_cookie(response: Response, request: Request, key: str) -> None:
    response.set_cookie(SESSION_COOKIE, key, max_age=COOKIE_MAX_AGE_S, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_login_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def signed_in(request: Request, session: SessionDep, settings: SettingsDep) -> User | None:
    """The cookie's user (kept on ``request.state`` for the templates), or None."""
    key = request.cookies.get(SESSION_COOKIE)
    if not key:
        return None
    user = authenticate(session, key, pepper=settings.api_key_pepper.get_secret_value())
    if user is not None:
        request.state.web_user = user
        request.state.csrf = csrf_token_of(key, settings)
    return user


def web_user(request: Request, user: Annotated[User | None, Depends(signed_in)]) -> User:
    """The signed-in user; anyone else is sent to the login form (and back here afterwards)."""
    if user is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query if request.method == "GET" else "/")
    return user


WebUser = Annotated[User, Depends(web_user)]


def form_user(request: Request, user: WebUser, csrf_token: Annotated[str, Form()] = "") -> User:
    """The signed-in user of a state-changing form whose CSRF token matches their session's."""
    expected: str = request.state.csrf
    if not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        raise CsrfRejected("this form did not come from your dashboard session (missing or wrong CSRF "
                           "token); reload the page and submit it again")
    return user


FormUser = Annotated[User, Depends(form_user)]


def safe_next(value: str | None) -> str:
    """A local path to go to after signing in; anything else (another site) gives ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(ch) < 0x20 for ch in value):
        return "/"
    return value
