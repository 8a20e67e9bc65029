"""Errors that the CLI turns into one clear line and an exit code.

Library code raises these; `cli.py` catches them, prints `error: <message>` and exits with
`exit_code`. Anything else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations


class SegDistillError(Exception):
    """A failure the user can act on (bad data, missing weights, network, ...). Exit code 1."""

    exit_code = 1


class ConfigError(SegDistillError):
    """A usage or configuration error (unknown key, wrong type, missing file). Exit code 2."""

    exit_code = 2
