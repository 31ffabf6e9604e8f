"""Outputs: where processed events and alerts go. One interface, one registry."""
