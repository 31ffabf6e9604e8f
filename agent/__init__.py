"""The sisguard agent: sensors -> spool -> shipper."""

__version__ = "0.1.0"
