"""The accounts a new embedded identity starts with, one per role. Their passwords are public
(README), so production mode never seeds them; and so their hashes (argon2id with the default
parameters) are made once, here, instead of at every new system's first start."""

from __future__ import annotations

from dataclasses import dataclass

from pizzeria.kit.auth import Role


@dataclass(frozen=True)
class DemoAccount:
    email: str
    password: str
    name: str
    role: Role
    #: `password` hashed ahead of time (a new hash is made when the hasher's parameters differ).
    password_hash: str


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount(
        "alice@pizzeria.example",
        "alice-pizza-1",
        "Alice",
        "customer",
        "$argon2id$v=19$m=65536,t=3,p=4$KaIoIIz15LfYrbAAvt6Rfw$QdIIILuqPUuMiZ8ReU5YwMQ2WzcDqjmIC9aU+kfLB2E",
    ),
    DemoAccount(
        "bob@pizzeria.example",
        "bob-pizza-12",
        "Bob",
        "customer",
        "$argon2id$v=19$m=65536,t=3,p=4$nSVh22v0tUCH4LKIdGD3YA$oKwyhBS9XbFFgUlIRhCISmW52qROY6dT+WB9Wlshftg",
    ),
    DemoAccount(
        "chef@pizzeria.example",
        "chef-pizza-1",
        "Chef",
        "staff",
        "$argon2id$v=19$m=65536,t=3,p=4$YE/9fj+MtE6sfmTSOcPWcg$H4Spy1dP4zQmFxfgvYXTP8Q26e2sQzA1oJhcSZeouE4",
    ),
    DemoAccount(
        "rider@pizzeria.example",
        "rider-pizza-1",
        "Rider",
        "courier",
        "$argon2id$v=19$m=65536,t=3,p=4$eJJw51J3pO+jgJzUmRTRIg$C0Syj8eXrL3ZVwsx8H6Wnhk4rJH1GwsFGvSw8+fWjmo",
    ),
    DemoAccount(
        "admin@pizzeria.example",
        "admin-pizza-1",
        "Admin",
        "admin",
        "$argon2id$v=19$m=65536,t=3,p=4$wHfHgtcO8T99hg8UgnkZrw$n3khAMMbIYvOsgtFvlPTmdsCbq/I9HuoGQemUF+bwl4",
    ),
)
