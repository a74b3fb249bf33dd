"""The reference broker: a Kafka-style node speaking Kafka wire protocol.

It imports nothing else of faultline and reaches the world only through `env.NodeEnv`.
"""
