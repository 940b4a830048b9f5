"""Business metrics of notifications."""

from prometheus_client import Counter

notifications_sent = Counter("pizzeria_notifications_sent_total", "Notifications delivered, by channel.", ["channel"])
