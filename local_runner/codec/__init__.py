"""Proto3 JSON <-> model, in one place: the REST API, the queue file and the SQLite store all use it.

Output is lowerCamelCase with enums as names (or integers on request), int64 as strings; input accepts
lowerCamelCase and snake_case names and enum names or integers. By concern:

- :mod:`.scalars`: Timestamps, Durations, bytes, enums, field-name casing, the ``JsonObject`` type;
- :mod:`.reader`: the field reader that checks names, types and ranges and names the field on every error;
- :mod:`.queues`: Queue, RateLimits, RetryConfig, HttpTarget and tokens;
- :mod:`.tasks`: Task, HttpRequest and Attempt, and the stored form of an Attempt.
"""
