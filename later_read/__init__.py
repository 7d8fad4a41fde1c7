"""later-read: nightly prewarm and hourly push for the "later reading" book recommendation."""

__version__ = "0.1.0"
