"""Chaos tests run the whole system like the e2e tests do, then break it."""

from tests.e2e.conftest import stack

__all__ = ["stack"]
