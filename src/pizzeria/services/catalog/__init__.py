"""Catalog: the menu (items, sizes, prices, recipes). Emits menu events."""
