"""Pizzeria: an event-driven pizza ordering platform built from reliable microservices."""

__version__ = "0.1.0"
