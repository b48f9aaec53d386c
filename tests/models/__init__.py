"""Tests of ``suelo.models`` (models/): one file per module."""
