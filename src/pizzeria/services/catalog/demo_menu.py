"""The menu a new catalog starts with (prices in cents, recipes in stock units per pizza)."""

from __future__ import annotations

from pizzeria.services.catalog.schemas import IngredientBody, MenuItemBody, SizeBody


def _pizza(name: str, description: str, prices: tuple[int, int, int], *ingredients: tuple[str, int]) -> MenuItemBody:
    base = (("dough", 1), ("tomato_sauce", 80))
    return MenuItemBody(
        name=name,
        description=description,
        category="pizza",
        sizes=[SizeBody(size=s, price=p) for s, p in zip(("small", "medium", "large"), prices, strict=True)],
        recipe=[IngredientBody(ingredient=i, quantity=q) for i, q in (*base, *ingredients)],
    )


DEMO_MENU: list[MenuItemBody] = [
    _pizza("Margherita", "Tomato, mozzarella, basil.", (790, 990, 1290), ("mozzarella", 120), ("basil", 5)),
    _pizza(
        "Pepperoni", "Tomato, mozzarella, spicy pepperoni.", (890, 1190, 1490), ("mozzarella", 120), ("pepperoni", 60)
    ),
    _pizza("Funghi", "Tomato, mozzarella, mushrooms.", (850, 1090, 1390), ("mozzarella", 120), ("mushrooms", 70)),
    _pizza(
        "Quattro Formaggi",
        "Mozzarella, gorgonzola, parmesan, fontina.",
        (990, 1290, 1590),
        ("mozzarella", 80),
        ("gorgonzola", 40),
        ("parmesan", 30),
        ("fontina", 40),
    ),
    _pizza(
        "Hawaiian",
        "Tomato, mozzarella, ham, pineapple.",
        (890, 1150, 1450),
        ("mozzarella", 120),
        ("ham", 60),
        ("pineapple", 60),
    ),
    _pizza(
        "Diavola",
        "Tomato, mozzarella, salami, chili.",
        (920, 1190, 1490),
        ("mozzarella", 120),
        ("salami", 60),
        ("chili", 5),
    ),
    _pizza(
        "Vegetariana",
        "Tomato, mozzarella, peppers, olives, onions.",
        (890, 1150, 1450),
        ("mozzarella", 100),
        ("peppers", 50),
        ("olives", 30),
        ("onions", 30),
    ),
    _pizza("Marinara", "Tomato, garlic, oregano. No cheese.", (690, 890, 1090), ("garlic", 5), ("oregano", 2)),
]
