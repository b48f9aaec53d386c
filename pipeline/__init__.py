"""suelo: Sentinel-2 time series to land-cover and urban-atlas maps.

Stages live in data-flow order: ``ingest`` -> ``composite`` -> (encode/segment) -> (threshold) -> (write).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("suelo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
