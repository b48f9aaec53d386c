"""Accuracy and area assessment."""
