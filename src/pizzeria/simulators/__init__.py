"""Stand-ins for the outside world the pizzeria depends on (not part of the product)."""
