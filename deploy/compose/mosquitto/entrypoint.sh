#!/bin/sh
# Build the broker's password file from the gateways' file (a secret, made with mosquitto_passwd)
# plus the bridge account from the environment (.env), then run the broker.
set -eu
: "${QUANTRAC_MQTT_USERNAME:?set QUANTRAC_MQTT_USERNAME in deploy/compose/.env}"
: "${QUANTRAC_MQTT_PASSWORD:?set QUANTRAC_MQTT_PASSWORD in deploy/compose/.env}"
umask 077
cp /run/secrets/gateways.passwd /mosquitto/data/passwd
mosquitto_passwd -b /mosquitto/data/passwd "$QUANTRAC_MQTT_USERNAME" "$QUANTRAC_MQTT_PASSWORD"
chown mosquitto:mosquitto /mosquitto/data/passwd
exec /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf
