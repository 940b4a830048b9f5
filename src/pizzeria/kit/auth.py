"""Access tokens and who is calling: JWTs signed with HS256 by identity, checked by every service
(they do not trust the network) and the gateway, plus the FastAPI dependencies that do the check.

Only HS256 is ever accepted: the algorithm is fixed here, never read from the token, so `alg:
none` and algorithm-confusion tokens are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, get_args

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from pizzeria.kit.errors import Forbidden, Unauthorized
from pizzeria.kit.ids import new_id
from pizzeria.kit.settings import Settings, get_settings

Role = Literal["customer", "staff", "courier", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

ALGORITHM = "HS256"
ISSUER = "pizzeria"
AUDIENCE = "pizzeria"
REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "iss", "aud", "jti")
#: Tolerated clock skew between the issuing and the checking host.
LEEWAY_S = 5


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as its access token names it. `epoch`: the account's token
    epoch when the token was issued; signing out, a role change or a deletion moves the epoch
    on, and every service refuses tokens of an older one."""

    user_id: str
    role: Role
    email: str | None = None
    epoch: int = 0


class TokenEpochs(Protocol):
    """What a service knows of accounts' token epochs (fed by identity's events)."""

    def current(self, user_id: str) -> int:
        """The epoch a token of `user_id` must have at least (0 when nothing is known)."""
        ...


@dataclass(frozen=True)
class AccessToken:
    """A signed access token and when it stops being accepted."""

    token: str
    jti: str
    expires_in: int  # seconds, as OAuth 2.0 token responses give it
    expires_at: datetime


class InvalidToken(Unauthorized):
    """A bearer token was sent but cannot be accepted (forged, expired, malformed...)."""

    type_slug = "invalid-token"
    title = "Invalid token"

    def __init__(self, detail: str) -> None:
        # RFC 6750 3.1: tell the client the token itself is the problem (so it may refresh).
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="pizzeria", error="invalid_token"'})


#: The header a device sends its own key in (devices call with it, not with a user's token).
DEVICE_KEY_HEADER = "X-Device-Key"


class InvalidDeviceKey(Unauthorized):
    """A device's call without its key, or with a key that is not its own."""

    type_slug = "invalid-device-key"
    title = "Invalid device key"
    default_headers = {"WWW-Authenticate": f'DeviceKey realm="pizzeria", header="{DEVICE_KEY_HEADER}"'}


#: What a device is told when it sent no key.
NO_DEVICE_KEY = f"this needs the device's key: send `{DEVICE_KEY_HEADER}: <secret>`"
#: What a device is told when its key is not its own (alike for a device that does not exist:
#: a key is not a way to learn which devices do).
NOT_ITS_KEY = "the device key is not this device's"


def device_key_digest(key: str) -> str:
    """What is kept of a device's key: its SHA-256 (hex). A plain hash is enough: the key is
    256 random bits, not a password a guess could find."""
    return hashlib.sha256(key.encode()).hexdigest()


def device_key_matches(key: str, digest: str) -> bool:
    return hmac.compare_digest(device_key_digest(key), digest)


class TokenIssuer:
    """Signs access tokens with the shared secret (used by identity only)."""

    def __init__(self, secret: str, *, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenIssuer:
        return cls(settings.jwt_secret.get_secret_value(), ttl_s=settings.access_token_ttl_s)

    def issue(self, principal: Principal, *, now: float | None = None, ttl_s: int | None = None) -> AccessToken:
        """A token for `principal`, valid `ttl_s` seconds from `now` (Unix time; defaults: the
        issuer's TTL from this instant). A past `now` or a negative TTL gives an expired token."""
        issued = int(time.time() if now is None else now)
        ttl = self.ttl_s if ttl_s is None else ttl_s
        jti = new_id()
        claims: dict[str, Any] = {
            "sub": principal.user_id,
            "role": principal.role,
            "iat": issued,
            "exp": issued + ttl,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "jti": jti,
            "ep": principal.epoch,
        }
        if principal.email is not None:
            claims["email"] = principal.email
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return AccessToken(
            token=token, jti=jti, expires_in=ttl, expires_at=datetime.fromtimestamp(issued + ttl, tz=UTC)
        )


def issue_access_token(
    principal: Principal, settings: Settings, *, now: float | None = None, ttl_s: int | None = None
) -> AccessToken:
    """Sign an access token with the configured secret and TTL."""
    return TokenIssuer.from_settings(settings).issue(principal, now=now, ttl_s=ttl_s)


#: Why PyJWT refused a token, in words a client developer can act on (most specific first).
_REASONS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "the access token has expired; refresh it or sign in again"),
    (jwt.InvalidAlgorithmError, f"the access token must be signed with {ALGORITHM}"),
    (jwt.InvalidSignatureError, "the access token's signature does not verify"),
    (jwt.InvalidAudienceError, f"the access token is not meant for audience {AUDIENCE!r}"),
    (jwt.InvalidIssuerError, f"the access token was not issued by {ISSUER!r}"),
    (jwt.ImmatureSignatureError, "the access token is not valid yet"),
    (jwt.DecodeError, "the access token is not a well-formed JWT"),
)


def decode_access_token(token: str, settings: Settings) -> Principal:
    """The principal a valid token names; raises `InvalidToken` (401) for anything else."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the access token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), None)
        raise InvalidToken(reason or f"the access token is invalid: {exc}") from None
    subject, role, email, epoch = claims["sub"], claims["role"], claims.get("email"), claims.get("ep", 0)
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("the access token's 'sub' claim must be a non-empty string")
    if role not in ROLES:
        raise InvalidToken(f"the access token names an unknown role {role!r}")
    if email is not None and not isinstance(email, str):
        raise InvalidToken("the access token's 'email' claim must be a string")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise InvalidToken("the access token's 'ep' claim must be a whole number")
    return Principal(user_id=subject, role=role, email=email, epoch=epoch)


# -- FastAPI dependencies ----------------------------------------------------------------------

# auto_error=False: a missing header is answered by us, as problem+json, not by FastAPI.
_bearer = HTTPBearer(auto_error=False, description="An access token from `POST /api/v1/auth/login`.")


def _settings(request: Request) -> Settings:
    settings: Settings | None = getattr(request.app.state, "settings", None)
    return settings or get_settings()


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller named by the `Authorization: Bearer` header; 401 without a valid one."""
    if credentials is None:
        raise Unauthorized("this needs an access token: send `Authorization: Bearer <token>`")
    principal = decode_access_token(credentials.credentials, _settings(request))
    epochs: TokenEpochs | None = getattr(request.app.state, "token_epochs", None)
    if epochs is not None and principal.epoch < epochs.current(principal.user_id):
        raise InvalidToken(
            "this access token was revoked (signed out, or the account was changed or deleted); "
            "refresh it or sign in again"
        )
    return principal


#: Route dependency: the authenticated caller (401 problem+json when there is none).
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

_device_key = APIKeyHeader(
    name=DEVICE_KEY_HEADER,
    scheme_name="deviceKey",
    auto_error=False,
    description="The secret issued to the device when it was registered.",
)


async def _presented_device_key(key: Annotated[str | None, Security(_device_key)]) -> str:
    """The key the device sent (401 before anything else is looked at when it sent none)."""
    if not key:
        raise InvalidDeviceKey(NO_DEVICE_KEY)
    return key


#: Route dependency of the routes devices call: the key the device sent, to check against its
#: own (a device that sent none is refused with 401 at once).
DeviceKey = Annotated[str, Depends(_presented_device_key)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets only callers with one of `roles` through (403 for the others)."""
    unknown = set(roles) - set(ROLES)
    if not roles or unknown:
        raise ValueError(f"require_roles needs known roles, got {roles!r}")
    allowed = frozenset(roles)

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"this needs the role {' or '.join(roles)}; the caller is {principal.role}")
        return principal

    return dependency


# -- who may do what (the same table the gateway enforces; services check it again) -------------

#: Roles that act for the business and see every customer's things.
PRIVILEGED: frozenset[Role] = frozenset({"staff", "admin"})

Customer = Annotated[Principal, Depends(require_roles("customer"))]
Staff = Annotated[Principal, Depends(require_roles("staff", "admin"))]
Courier = Annotated[Principal, Depends(require_roles("courier", "staff", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
CustomerOrStaff = Annotated[Principal, Depends(require_roles("customer", "staff", "admin"))]
CustomerOrAdmin = Annotated[Principal, Depends(require_roles("customer", "admin"))]


def owner_scope(principal: Principal) -> str | None:
    """The customer whose things the caller may see: their own id, or None for a role that
    sees everyone's. A customer asking for someone else's thing gets 404, not 403, so ids
    cannot be probed."""
    return None if principal.role in PRIVILEGED else principal.user_id
