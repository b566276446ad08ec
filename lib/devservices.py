"""Make sure the machine's PostgreSQL and Redis answer before tests that need them run.

``python -m skyops.devservices ensure`` (run by ``make test``) probes 127.0.0.1:5432 and
127.0.0.1:6379 and, when one is down and we may start it (root), starts it the way the
project's machines do (see ARCHITECTURE.md). It never installs anything.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

SERVICES = {
    "postgresql": (
        5432,
        lambda: ["pg_ctlcluster", "--skip-systemctl-redirect",
                 sorted(os.listdir("/etc/postgresql"))[-1] if os.path.isdir("/etc/postgresql") else "15",
                 "main", "start"],
    ),
    "redis": (
        6379,
        lambda: ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
                 "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
                 "--logfile", "/var/log/redis/ci.log"],
    ),
}


def is_up(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure(name: str) -> bool:
    """True when the service answers (starting it if it is down and we are root)."""
    port, cmd = SERVICES[name]
    if is_up(port):
        return True
    argv = cmd()
    if os.geteuid() != 0 or shutil.which(argv[0]) is None:
        return False
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if is_up(port):
            return True
        time.sleep(0.2)
    return False


def main(argv: list[str]) -> int:
    if argv[:1] != ["ensure"]:
        print("usage: python -m skyops.devservices ensure", file=sys.stderr)
        return 2
    for name in SERVICES:
        state = "up" if ensure(name) else "DOWN (tests that need it skip, or fail under CI=true)"
        print(f"services: {name} on 127.0.0.1:{SERVICES[name][0]}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
