"""Nemeses: fault injection over the sim and process runtimes (arrives with issue 5)."""
