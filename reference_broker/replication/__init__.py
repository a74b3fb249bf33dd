"""Replication: partition leadership, ISR and the high watermark."""
