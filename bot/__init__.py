"""Telegram front end of the face search engine: `python -m bot`."""
