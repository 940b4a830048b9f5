"""Devices: the ovens of the kitchen stations and the couriers' trackers, their twins and commands."""
