"""Analyses of the embedding space and plots."""
