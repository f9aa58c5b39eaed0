"""history: the agent's flight recorder, so that a capture can start in the past.

docs/captures.md says what it keeps and why.
"""
