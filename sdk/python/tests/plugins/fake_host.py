#!/usr/bin/env python3
"""A stand-in plugin host for the host-death test.

Usage: fake_host.py PLUGIN_SCRIPT

Starts PLUGIN_SCRIPT with this interpreter and the inherited environment
(stderr inherited too), reads its handshake line, prints
"<plugin pid> <handshake line>" on its own stdout, then waits to be killed.
"""

import subprocess
import sys
import time


def main():
    plugin = subprocess.Popen(
        [sys.executable, sys.argv[1]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    line = plugin.stdout.readline().decode().strip()
    sys.stdout.write(f"{plugin.pid} {line}\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
