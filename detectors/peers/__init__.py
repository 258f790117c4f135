"""Peers: the tools people use today, wrapped as detectors and scored in the same matrix.

They are not part of the default run (``recipebench run --with-peers`` adds them).
Each adapter imports its tool lazily, so a missing install is an ``error`` cell with
the install command, never a broken registry.
"""
