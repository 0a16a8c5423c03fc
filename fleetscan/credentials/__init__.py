"""Access keys, and where they come from (``onsmqtt-api.md`` §7 and §7.1).

`resolve_credentials` walks the chain Alibaba's own tools use and returns a provider
the client asks before every attempt. The package, one concept per module, imports
pointing down the list:

- `value`: `Credentials`, the `CredentialsProvider` protocol, `StaticCredentials`
  (a leaf);
- `refreshing`: `RefreshingCredentials`, temporary credentials fetched anew before
  they expire, one fetch at a time;
- `fetchers`: the ECS metadata service and a credentials URI, over HTTP;
- `sts`: the STS client (``AssumeRole``, ``AssumeRoleWithOIDC``) and its endpoint;
- `sources`: each kind of source (keys, ECS role, URI, RAM role, OIDC role) and how
  it provides;
- `profiles`: ``~/.aliyun/config.json`` and ``~/.alibabacloud/credentials.ini``;
- `chain`: the ordered steps, and `resolve_credentials`.
"""

from fleetscan.credentials.chain import CHAIN, ChainStep, resolve_credentials
from fleetscan.credentials.refreshing import REFRESH_MARGIN, RefreshingCredentials
from fleetscan.credentials.sources import METADATA_URL, Source
from fleetscan.credentials.sts import StsClient, StsEndpoint, sts_endpoint
from fleetscan.credentials.value import (
    Credentials,
    CredentialsProvider,
    ResolvedCredentials,
    StaticCredentials,
)

__all__ = [
    "CHAIN",
    "METADATA_URL",
    "REFRESH_MARGIN",
    "ChainStep",
    "Credentials",
    "CredentialsProvider",
    "RefreshingCredentials",
    "ResolvedCredentials",
    "Source",
    "StaticCredentials",
    "StsClient",
    "StsEndpoint",
    "resolve_credentials",
    "sts_endpoint",
]
