"""Delivery: couriers, and bringing ready orders to customers."""
