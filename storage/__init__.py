"""storage: every byte the pipeline writes. The normative description is storage/PROTOCOL.md."""

PROTOCOL_VERSION = 1
