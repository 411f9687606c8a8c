#!/usr/bin/env python3
"""A plugin that leaves a child process behind in its process group when it
stops (a `sleep` it never waits for): PluginHost must notice."""

import subprocess

import plugvisor_plugin


def register(server):
    subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    plugvisor_plugin.serve(register)
