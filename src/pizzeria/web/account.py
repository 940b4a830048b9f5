"""The visitor's account: sign up, sign in, sign out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pizzeria.kit.auth import decode_access_token
from pizzeria.web.render import redirect
from pizzeria.web.session import Visit, local_path
from pizzeria.web.site import Web, form

#: Where each role starts after signing in.
HOME = {"customer": "/", "staff": "/kitchen", "courier": "/deliveries", "admin": "/ops"}


class Accounts:
    """Sign up, sign in and sign out, kept as the session cookies."""

    def __init__(self, web: Web) -> None:
        self.web = web

    def router(self) -> APIRouter:
        routes = APIRouter()
        routes.add_api_route("/signin", self.signin_page, methods=["GET"])
        routes.add_api_route("/signin", self.signin, methods=["POST"])
        routes.add_api_route("/signup", self.signup_page, methods=["GET"])
        routes.add_api_route("/signup", self.signup, methods=["POST"])
        routes.add_api_route("/signout", self.signout, methods=["POST"])
        return routes

    async def signin_page(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        return self.web.render.page(
            request,
            visit,
            "signin.html",
            title="Sign in",
            next=local_path(request.query_params.get("next"), ""),
            demo=self.web.sessions.settings.mode == "embedded",
        )

    async def signin(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        fields = await form(request)
        email, target = fields.get("email", "").strip(), local_path(fields.get("next"), "")
        answer = await self.web.call(
            request, visit, "POST", "/api/v1/auth/login", json={"email": email, "password": fields.get("password", "")}
        )
        if answer.status == 200:
            return self.signed_in(request, visit, answer.json(), target)
        if answer.status in (401, 422):
            message = "That email and password do not match an account."
        elif answer.status == 429:
            message = f"Too many attempts. {answer.problem()}"
        else:
            message = "Signing in is unavailable right now; please try again in a moment."
        return self.web.render.page(
            request,
            visit,
            "signin.html",
            status=answer.status if answer.status < 500 else 503,
            title="Sign in",
            next=target,
            email=email,
            error=message,
            demo=self.web.sessions.settings.mode == "embedded",
        )

    def signed_in(self, request: Request, visit: Visit, tokens: dict[str, Any], target: str) -> Response:
        principal = decode_access_token(tokens["access_token"], self.web.sessions.settings)
        visit.sign_in(tokens, principal, self.web.sessions.lifetime_s)
        return redirect(request, visit, target or HOME.get(principal.role, "/"), flash="You are signed in.")

    async def signup_page(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        return self.web.render.page(
            request,
            visit,
            "signup.html",
            title="Create an account",
            next=local_path(request.query_params.get("next"), ""),
            values={},
            errors={},
        )

    async def signup(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        fields = await form(request)
        values = {"name": fields.get("name", "").strip(), "email": fields.get("email", "").strip()}
        target = local_path(fields.get("next"), "")
        body = {**values, "password": fields.get("password", "")}
        answer = await self.web.call(request, visit, "POST", "/api/v1/auth/register", json=body)
        if answer.status == 201:
            login = await self.web.call(
                request,
                visit,
                "POST",
                "/api/v1/auth/login",
                json={"email": values["email"], "password": body["password"]},
            )
            if login.status == 200:
                return self.signed_in(request, visit, login.json(), target)
            return redirect(request, visit, "/signin", flash="Your account is ready: please sign in.")
        errors = answer.field_errors()
        if answer.status == 409:
            errors = {"email": "An account with this email already exists. Sign in instead?"}
        elif not errors:
            errors = {"form": answer.problem() if answer.status < 500 else "Signing up is unavailable right now."}
        return self.web.render.page(
            request,
            visit,
            "signup.html",
            status=answer.status if answer.status < 500 else 503,
            title="Create an account",
            next=target,
            values=values,
            errors=errors,
        )

    async def signout(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        if visit.refresh:
            await self.web.call(request, visit, "POST", "/api/v1/auth/logout", json={"refresh_token": visit.refresh})
        visit.sign_out()
        return redirect(request, visit, "/", flash="You are signed out.")
