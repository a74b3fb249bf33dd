"""The reference broker: a single Kafka-style node speaking Kafka wire protocol. Imports nothing else of faultline."""
