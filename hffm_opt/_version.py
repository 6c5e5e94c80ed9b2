"""The package version (one place; read by the solvers that report their own version)."""

__version__ = "0.1.0"
