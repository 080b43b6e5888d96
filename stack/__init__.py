"""The local service manager for development and tests: Mosquitto, Kafka and PostgreSQL on loopback, their
accounts and configs, and the supervision of the pipeline processes `quantrac run` starts. Production deployments
(deploy/) do not use it."""
