"""End-to-end tests across the package: the command line on real inputs, faults, hostile inputs, fuzzing,
architecture, packaging (Docker, workflows), QGIS, the Slovenia data and the benchmarks."""
