"""Placeholder until the chapter lands."""
