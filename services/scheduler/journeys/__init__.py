"""Journeys in the control plane: the stored versions (repository), storing one with its
rules (service), the HTTP API (api, schemas), and loading the shipped YAML files in this
directory at start (loader)."""
