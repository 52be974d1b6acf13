"""Base layer: typed config, the data contract, errors and the one I/O module. Imports nothing of the project above it."""
