"""The consumer group coordinator (classic protocol) and committed offsets in `__consumer_offsets`.

`coordinator.GroupCoordinator` is the entry point the request handlers call; the rules of a
group live in `state.ClassicGroup`, its members in `member.Member`, the on-disk record format
in `records`, and persistence in `offsets_store`.
"""
