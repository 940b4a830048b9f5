"""Access tokens: what identity signs, every service accepts; anything forged, expired, signed
another way or meant for someone else is refused with a clear 401."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import orjson
import pytest

from pizzeria.kit.auth import (
    AUDIENCE,
    ISSUER,
    InvalidToken,
    Principal,
    TokenIssuer,
    decode_access_token,
    issue_access_token,
)
from pizzeria.kit.errors import Unauthorized
from pizzeria.kit.settings import DEVELOPMENT_JWT_SECRET, Settings
from pizzeria.registry import entry

SECRET = "unit-test-secret-long-enough-for-hs256-hs384-and-even-hs512-keys!"
OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256"
ALICE = Principal(user_id="0190-alice", role="customer", email="alice@pizzeria.example")


@pytest.fixture
def settings() -> Settings:
    return Settings(JWT_SECRET=SECRET)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "u-1",
        "role": "staff",
        "iat": now,
        "exp": now + 60,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": "j-1",
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def refused(token: str, settings: Settings) -> str:
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(token, settings)
    assert isinstance(caught.value, Unauthorized)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    return str(caught.value.detail)


def b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(part)).decode().rstrip("=")


def test_issue_then_decode_gives_back_the_principal(settings: Settings) -> None:
    issued = issue_access_token(ALICE, settings)
    assert decode_access_token(issued.token, settings) == ALICE
    assert issued.expires_in == settings.access_token_ttl_s == 900
    payload = jwt.decode(issued.token, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert set(payload) == {"sub", "role", "email", "iat", "exp", "iss", "aud", "jti", "ep"}
    assert payload["exp"] - payload["iat"] == 900
    assert payload["jti"] == issued.jti
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


def test_every_token_has_its_own_id(settings: Settings) -> None:
    issuer = TokenIssuer.from_settings(settings)
    assert issuer.issue(ALICE).jti != issuer.issue(ALICE).jti


def test_email_is_optional(settings: Settings) -> None:
    rider = Principal(user_id="u-9", role="courier")
    assert decode_access_token(issue_access_token(rider, settings).token, settings) == rider


def test_tampered_payload_is_refused(settings: Settings) -> None:
    header, _, signature = issue_access_token(ALICE, settings).token.split(".")
    forged = b64({**claims(), "sub": ALICE.user_id, "role": "admin"})
    assert "signature" in refused(f"{header}.{forged}.{signature}", settings)


def test_tampered_signature_is_refused(settings: Settings) -> None:
    token = issue_access_token(ALICE, settings).token
    flipped = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert "signature" in refused(flipped, settings)


def test_token_signed_with_another_secret_is_refused(settings: Settings) -> None:
    token = jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")
    assert "signature" in refused(token, settings)


def test_expired_token_is_refused(settings: Settings) -> None:
    expired = TokenIssuer.from_settings(settings).issue(ALICE, ttl_s=-60)
    assert "expired" in refused(expired.token, settings)
    issued_long_ago = TokenIssuer.from_settings(settings).issue(ALICE, now=time.time() - 3600)
    assert "expired" in refused(issued_long_ago.token, settings)


@pytest.mark.parametrize("algorithm", ["HS512", "HS384"])
def test_token_signed_with_another_algorithm_is_refused(settings: Settings, algorithm: str) -> None:
    token = jwt.encode(claims(), SECRET, algorithm=algorithm)
    assert "HS256" in refused(token, settings)


def test_alg_none_token_is_refused(settings: Settings) -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    assert "HS256" in refused(unsigned, settings)
    none_with_garbage = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.c2lnbmF0dXJl"
    refused(none_with_garbage, settings)


@pytest.mark.parametrize(
    ("claim", "value", "words"),
    [
        ("aud", "someone-else", "audience"),
        ("iss", "evil-corp", "issued"),
    ],
)
def test_wrong_audience_or_issuer_is_refused(settings: Settings, claim: str, value: str, words: str) -> None:
    token = jwt.encode(claims(**{claim: value}), SECRET, algorithm="HS256")
    assert words in refused(token, settings)


@pytest.mark.parametrize("missing", ["sub", "role", "exp", "iat", "iss", "aud", "jti"])
def test_token_missing_a_claim_is_refused(settings: Settings, missing: str) -> None:
    token = jwt.encode({k: v for k, v in claims().items() if k != missing}, SECRET, algorithm="HS256")
    detail = refused(token, settings)
    assert missing in detail


@pytest.mark.parametrize("overrides", [{"role": "superuser"}, {"sub": ""}, {"email": 42}])
def test_token_with_bad_claim_values_is_refused(settings: Settings, overrides: dict[str, Any]) -> None:
    refused(jwt.encode(claims(**overrides), SECRET, algorithm="HS256"), settings)


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "a.b", "Bearer x.y.z"])
def test_garbage_is_refused_not_crashed_on(settings: Settings, garbage: str) -> None:
    refused(garbage, settings)


def test_production_mode_refuses_the_development_secret() -> None:
    base = {
        "PIZZERIA_MODE": "production",
        "DATABASE_URL": "postgresql+asyncpg://db/x",
        "BROKER_URL": "kafka://k:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_PASSWORD": "orders-password",
        "REDIS_URL": "redis://cache:6379/0",
    }
    default = Settings(**base)
    assert default.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
    assert any("JWT_SECRET" in p for p in default.production_problems("orders"))
    short = Settings(**base, JWT_SECRET="short")
    assert any("32 bytes" in p for p in short.production_problems("orders"))
    assert Settings(**base, JWT_SECRET=SECRET).production_problems("orders") == []
    assert Settings().production_problems("orders") == [], "embedded mode keeps the default"


def test_the_secret_never_shows_in_a_repr() -> None:
    assert SECRET not in repr(Settings(JWT_SECRET=SECRET))


def test_production_mode_needs_redis_where_caches_and_rate_limits_are_shared() -> None:
    base = {
        "PIZZERIA_MODE": "production",
        "DATABASE_URL": "postgresql+asyncpg://db/x",
        "BROKER_URL": "kafka://k:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_PASSWORD": "orders-password",
        "JWT_SECRET": SECRET,
    }
    without = Settings(**base)
    for service in ("gateway", "catalog", "orders"):
        with pytest.raises(SystemExit, match="REDIS_URL"):
            entry(service).load().create_app(without)
    entry("payments").load().create_app(without)  # needs no Redis: builds without complaint
    assert (
        Settings(**base, REDIS_URL="redis://cache:6379/0").production_problems(
            "gateway", messaging=False, shared_state=True
        )
        == []
    )
