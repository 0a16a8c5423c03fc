"""The OnsMqtt API client, one concept per module:

- `onsmqtt`: `OnsMqttClient`, one signed attempt of each session call;
- `signers`: the V3 and V1 signer objects it calls through one interface;
- `answers`: reading an answer into `SessionAnswer` / `BatchAnswer` or an `ApiError`;
- `transport`: the one place aiohttp's exceptions become `ApiError`s;
- `session_api`: the `SessionApi` Protocol a scan calls (the client is the real one);
- `connection`: `connect()` and the verifying TLS context.

Endpoints and the loopback rule live in `fleetscan.endpoints`, shared with the emulator;
redaction (secrets cut out of whatever a server quoted back) in `fleetscan.redaction`,
shared with the STS client.
"""

from fleetscan.client.answers import MAX_BODY_BYTES, BatchAnswer, SessionAnswer
from fleetscan.client.connection import connect, make_ssl_context, open_session
from fleetscan.client.onsmqtt import DEFAULT_TIMEOUT, OnsMqttClient
from fleetscan.client.session_api import SessionApi
from fleetscan.client.signers import Signer, V1Signer, V3Signer
from fleetscan.client.transport import TIMEOUT_CODE
from fleetscan.endpoints import check_endpoint, endpoint_for_region
from fleetscan.redaction import REDACTED

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY_BYTES",
    "REDACTED",
    "TIMEOUT_CODE",
    "BatchAnswer",
    "OnsMqttClient",
    "SessionAnswer",
    "SessionApi",
    "Signer",
    "V1Signer",
    "V3Signer",
    "check_endpoint",
    "connect",
    "endpoint_for_region",
    "make_ssl_context",
    "open_session",
]
