"""Unit tests: fast, in-process, no network; SQLite in a temporary file where needed."""
