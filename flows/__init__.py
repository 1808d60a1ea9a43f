"""Prefect only: the wave and analytics flows, their tasks, and the scheduled deployments.

The work itself is the service layer's (``graywave.service``); a flow here runs it with Prefect's
tasks, retries, logs and schedules.
"""
