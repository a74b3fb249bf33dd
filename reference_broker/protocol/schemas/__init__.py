"""Kafka message schemas that kafka-python does not ship: the controller and quorum APIs.

Each `<Name>.json` describes one request or response in the format of Kafka's
`clients/src/main/resources/common/message/` definitions (field names, types, the
versions each field exists in, tags), which is what kafka-python's `load_json`
compiles into codecs. Only wire facts are recorded here; see `controller_apis.py`
for the classes built from them and the version this broker speaks.
"""
