"""The package version, importable without importing the package's modules."""

__version__ = "0.2.0"
