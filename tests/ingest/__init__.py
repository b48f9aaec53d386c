"""Tests of ``suelo.ingest`` (pipeline/ingest/): one file per module."""
