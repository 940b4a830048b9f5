"""Payments: charges orders through the payment provider, reports the outcome."""
