"""Evaluation: retrieval metrics here; mteb integration and the offline benchmark follow."""
