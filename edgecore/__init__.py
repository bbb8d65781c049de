"""The edge daemon: local cache, hub link, node status (and later the MQTT eventbus)."""
