"""The bounded contexts, each its own process with its own database."""
