"""kopf wiring: the only layer that knows kopf."""
