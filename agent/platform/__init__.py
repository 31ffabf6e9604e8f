"""The operating system beneath the sensors.

``agent.platform.linux`` holds the Linux helpers (inotify, netlink, procfs, log following,
safe reads beneath a root).
"""
