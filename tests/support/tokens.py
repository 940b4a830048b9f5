"""Access tokens for tests that call services directly: signed with the secret the system under
test uses (the environment's, or the development default), as identity would sign them."""

from __future__ import annotations

from collections.abc import Mapping

from pizzeria.kit.auth import Principal, Role, issue_access_token
from pizzeria.kit.settings import Settings


def bearer(
    user_id: str, role: Role = "customer", *, settings: Settings | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An `Authorization` header for `user_id` acting as `role`, signed as `settings` say, or
    with the `JWT_SECRET` of the environment `env` a system runs with."""
    if settings is None:
        secret = (env or {}).get("JWT_SECRET")
        settings = Settings(JWT_SECRET=secret) if secret else Settings()  # type: ignore[call-arg]
    token = issue_access_token(Principal(user_id=user_id, role=role), settings)
    return {"Authorization": f"Bearer {token.token}"}
