"""Identity: users, roles, credentials and refresh tokens. Issues access tokens; emits user events."""
