"""Security tests: the attacker is real (an unprivileged user, a raw client)."""
