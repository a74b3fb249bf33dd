"""Workloads, the trio Kafka client and history recording (arrive with issues 4 and 6)."""
