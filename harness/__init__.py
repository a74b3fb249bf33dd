"""Harness: runtimes, runner, reports and the command line."""
