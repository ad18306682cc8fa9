"""RabbitMQ: the listeners that feed OpenKAT's events to the schedulers."""

from redisched.clients.amqp.listener import TRANSIENT_ERRORS, Backoff, Handler, Listener, Retryable
from redisched.clients.amqp.messages import (
    RAW_FILE_RECEIVED,
    SCAN_PROFILE_MUTATIONS,
    MutatedObject,
    MutationOperation,
    RawFileReceived,
    ScanProfile,
    ScanProfileMutation,
    json_handler,
)

__all__ = [
    "RAW_FILE_RECEIVED",
    "SCAN_PROFILE_MUTATIONS",
    "TRANSIENT_ERRORS",
    "Backoff",
    "Handler",
    "Listener",
    "MutatedObject",
    "MutationOperation",
    "RawFileReceived",
    "Retryable",
    "ScanProfile",
    "ScanProfileMutation",
    "json_handler",
]
