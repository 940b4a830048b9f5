"""The accounts a new embedded identity starts with, one per role. Their passwords are public
(README), so production mode never seeds them."""

from __future__ import annotations

from dataclasses import dataclass

from pizzeria.kit.auth import Role


@dataclass(frozen=True)
class DemoAccount:
    email: str
    password: str
    name: str
    role: Role


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount("alice@pizzeria.example", "alice-pizza-1", "Alice", "customer"),
    DemoAccount("bob@pizzeria.example", "bob-pizza-12", "Bob", "customer"),
    DemoAccount("chef@pizzeria.example", "chef-pizza-1", "Chef", "staff"),
    DemoAccount("rider@pizzeria.example", "rider-pizza-1", "Rider", "courier"),
    DemoAccount("admin@pizzeria.example", "admin-pizza-1", "Admin", "admin"),
)
