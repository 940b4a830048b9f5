"""Notifications: tells customers about their orders by email, SMS and push."""
