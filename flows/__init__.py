"""Prefect flows and tasks that compose kernels and storage, and the ``graywave`` CLI."""
