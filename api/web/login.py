"""``/login`` (paste an API key) and ``/logout``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from api.deps import REALM, SessionDep, SettingsDep
from api.web.render import WebRoute, page
from api.web.session import FormUser, clear_login_cookie, safe_next, set_login_cookie, signed_in
from store.models import User
from store.users import authenticate

router = APIRouter(route_class=WebRoute)


@router.get("/login")
def login_form(request: Request, user: Annotated[User | None, Depends(signed_in)], next: str = "/") -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html", next=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    key = api_key.strip()
    user = authenticate(session, key, pepper=settings.api_key_pepper.get_secret_value()) if key else None
    if user is None:
        error = ("that API key is unknown or was revoked: paste the whole key (it starts with tnas_), "
                 "or ask for a new one (thrifty-nas keys create)") if key else "paste your API key"
        response = page(request, "login.html", 401, next=safe_next(next), error=error)
        response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
        return response
    response = RedirectResponse(safe_next(next), status_code=303)
    set_login_cookie(response, request, key)
    return response


@router.post("/logout")
def logout(request: Request, user: FormUser) -> Response:
    response = RedirectResponse("/login", status_code=303)
    clear_login_cookie(response, request)
    return response
