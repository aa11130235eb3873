"""Helpers for end-to-end tests: pjsua2 test phones and audio analysis."""
