"""Deployment: SuperLink and SuperNode commands, credentials, Flower's own commands."""
