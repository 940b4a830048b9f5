#!/bin/sh
# Writes telemetry's broker login (hashed) from TELEMETRY_MQTT_PASSWORD, then runs the broker.
set -eu
: "${TELEMETRY_MQTT_PASSWORD:?set TELEMETRY_MQTT_PASSWORD}"
mkdir -p /mosquitto/data
rm -f /mosquitto/data/passwd
mosquitto_passwd -b -c /mosquitto/data/passwd telemetry "$TELEMETRY_MQTT_PASSWORD"
# The broker reads it after it dropped to its own user.
chown mosquitto:mosquitto /mosquitto/data /mosquitto/data/passwd
chmod 0600 /mosquitto/data/passwd
exec mosquitto -c /mosquitto/config/mosquitto.conf
