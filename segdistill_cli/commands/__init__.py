"""One module per command (or group). Each has `ORDER` and `register(app)`; see `cli.py`."""
