"""Business metrics of identity."""

from prometheus_client import Counter

logins = Counter(
    "pizzeria_identity_logins_total", "Sign-in attempts by outcome (success, failure, throttled).", ["outcome"]
)
refresh_token_reuse = Counter(
    "pizzeria_identity_refresh_token_reuse_total",
    "Refresh tokens presented again after rotation or revocation (their whole family was revoked).",
)
hashing_refused = Counter(
    "pizzeria_identity_password_checks_refused_total",
    "Password hashes and checks refused because the hashing queue was full or no turn came in time (503).",
)
