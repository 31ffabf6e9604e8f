"""Code shared by the agent and the collector: logging, config loading, errors.

Neither side imports the other; both import this package and the wire contract.
"""
