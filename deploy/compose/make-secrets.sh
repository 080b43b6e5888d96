#!/bin/sh
# Create the files compose.yaml reads as secrets, under ./secrets/ (git-ignored):
#   secrets/tls/{ca.crt,server.crt,server.key}  a private CA and the broker's certificate (10 years;
#                                                replace with your organisation's when you have one)
#   secrets/gateways.passwd                      gateway accounts; add one with
#        mosquitto_passwd secrets/gateways.passwd <STATION_ID>
#   secrets/api_metrics_key                      the key Prometheus scrapes the API's /metrics with (it may
#                                                read nothing else); mode 644 so that the Prometheus and API
#                                                containers' users can read it (secrets/ itself stays 700)
# Usage: ./make-secrets.sh <broker host name as the gateways dial it>
set -eu
host="${1:?usage: $0 <broker-host-name>}"
cd "$(dirname "$0")"
mkdir -p secrets/tls
umask 077
chmod 700 secrets
[ -f secrets/gateways.passwd ] || : > secrets/gateways.passwd
if [ ! -s secrets/api_metrics_key ]; then
  openssl rand -hex 32 > secrets/api_metrics_key
  chmod 644 secrets/api_metrics_key
fi
if [ ! -f secrets/tls/server.key ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=quantrac MQTT CA" \
    -keyout secrets/tls/ca.key -out secrets/tls/ca.crt
  openssl req -newkey rsa:3072 -nodes -subj "/CN=$host" -keyout secrets/tls/server.key -out secrets/tls/server.csr
  printf 'subjectAltName=DNS:%s\n' "$host" > secrets/tls/san.ext
  openssl x509 -req -in secrets/tls/server.csr -CA secrets/tls/ca.crt -CAkey secrets/tls/ca.key -CAcreateserial \
    -days 3650 -extfile secrets/tls/san.ext -out secrets/tls/server.crt
fi
echo "secrets ready under $(pwd)/secrets; give secrets/tls/ca.crt to the gateways"
