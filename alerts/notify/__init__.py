"""Notification channels: webhook (HMAC-signed, retried), MQTT, Kafka and SMTP.

Each channel is a callable `send(notification) -> (ok, detail)`; `alerts.notifier` decides what to
send and records every attempt in `notification_deliveries`.
"""
