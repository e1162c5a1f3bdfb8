"""Transcription worker: VAD endpointing and faster-whisper per call and channel."""
