"""callscribe: real-time transcription and agent assist for live phone calls."""

__version__ = "0.1.0"
