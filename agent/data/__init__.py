"""Data files shipped with the agent (FIM content signatures)."""
