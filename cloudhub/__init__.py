"""The hub: the fleet's desired state, the edge endpoint, the REST API."""
