"""The controller quorum: a KRaft-style Raft metadata log and the metadata machine on top.

`raft` holds the sans-I/O Raft core (KIP-595); `records` and `metadata` hold the
controller's records and the state machine that replays them and decides what to
write next (KIP-631). Nothing here performs I/O: the broker wires messages to its
network and ticks the node from trio's clock.
"""
