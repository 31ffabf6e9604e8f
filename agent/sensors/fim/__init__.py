"""File integrity monitoring: the ``fim`` sensor (``sensor.py``) and everything it uses.

Nothing is imported here: ``python -I -m agent.sensors.fim.hashing`` (the hash helpers)
must load only the standard library and the safe-read helpers.
"""
