"""The demo kitchen's opening stock (units per ingredient, matching the demo menu's recipes)."""

OPENING_STOCK: dict[str, int] = {
    "dough": 300,
    "tomato_sauce": 30_000,
    "mozzarella": 40_000,
    "basil": 2_000,
    "pepperoni": 10_000,
    "mushrooms": 10_000,
    "gorgonzola": 6_000,
    "parmesan": 6_000,
    "fontina": 6_000,
    "ham": 10_000,
    "pineapple": 10_000,
    "salami": 10_000,
    "chili": 2_000,
    "peppers": 8_000,
    "olives": 6_000,
    "onions": 6_000,
    "garlic": 2_000,
    "oregano": 1_000,
}
