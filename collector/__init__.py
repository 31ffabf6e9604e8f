"""The sisguard collector: ingest (gRPC, mutual TLS) -> enrich -> detect -> outputs."""

__version__ = "0.1.0"
