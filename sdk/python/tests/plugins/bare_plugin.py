#!/usr/bin/env python3
"""A Plugin that overrides nothing: it must report no hooks."""

from plugvisor_plugin import Plugin, run


class Bare(Plugin):
    pass


if __name__ == "__main__":
    run(Bare())
