"""Linux: the OS helpers the sensors use. Nothing is imported here."""
