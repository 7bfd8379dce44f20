"""Atlas test suite."""
