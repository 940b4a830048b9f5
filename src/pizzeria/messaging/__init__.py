"""Reliable messaging: envelope, broker port and adapters, outbox, inbox, consumer runner."""
