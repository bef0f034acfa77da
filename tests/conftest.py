"""Shared test configuration; the fixtures come from :mod:`harness.pytest_plugin`."""
