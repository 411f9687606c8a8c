#!/usr/bin/env python3
"""The smallest serve() plugin: only what the SDK serves for every plugin
(health, controller, stdio). bench_import.py times its start."""

import plugvisor_plugin

if __name__ == "__main__":
    plugvisor_plugin.serve()
