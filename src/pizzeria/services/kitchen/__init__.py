"""Kitchen: ingredient stock and reservations, recipes, and the tickets cooks work through."""
