"""EdgeGrid signing against the test vectors Akamai publishes with its reference client
(akamai/AkamaiOPEN-edgegrid-python, akamai/edgegrid/test/testdata.json): the same
credentials, timestamp and nonce must give the same signatures, byte for byte."""

from __future__ import annotations

import pytest

from scalekit.cdn.purge.edgegrid import edgegrid_authorization

BASE = "https://akaa-baseurl-xxxxxxxxxxx-xxxxxxxxxxxxx.luna.akamaiapis.net"
CREDENTIALS = {
    "client_token": "akab-client-token-xxx-xxxxxxxxxxxxxxxx",
    "access_token": "akab-access-token-xxx-xxxxxxxxxxxxxxxx",
    "client_secret": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=",
    "timestamp": "20140321T19:34:21+0000",
    "nonce": "nonce-xx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
}
PREFIX = ("EG1-HMAC-SHA256 client_token=akab-client-token-xxx-xxxxxxxxxxxxxxxx;"
          "access_token=akab-access-token-xxx-xxxxxxxxxxxxxxxx;timestamp=20140321T19:34:21+0000;"
          "nonce=nonce-xx-xxxx-xxxx-xxxx-xxxxxxxxxxxx;signature=")


@pytest.mark.parametrize(("method", "path", "body", "headers", "signature"), [
    pytest.param("GET", "/", b"", {}, "tL+y4hxyHxgWVD30X3pWnGKHcPzmrIF+LThiAOhMxYU=", id="simple GET"),
    pytest.param("GET", "/testapi/v1/t1?p1=1&p2=2", b"", {},
                 "hKDH1UlnQySSHjvIcZpDMbQHihTQ0XyVAKZaApabdeA=", id="GET with querystring"),
    pytest.param("POST", "/testapi/v1/t3", b"datadatadatadatadatadatadatadata", {},
                 "hXm4iCxtpN22m4cbZb4lVLW5rhX8Ca82vCFqXzSTPe4=", id="POST inside limit"),
    pytest.param("POST", "/testapi/v1/t3", b"d" * 2049, {},
                 "6Q6PiTipLae6n4GsSIDTCJ54bEbHUBp+4MUXrbQCBoY=", id="POST too large: hashed truncated"),
    pytest.param("POST", "/testapi/v1/t6", b"", {},
                 "1gEDxeQGD5GovIkJJGcBaKnZ+VaPtrc4qBUHixjsPCQ=", id="POST empty body"),
    pytest.param("GET", "/testapi/v1/t4", b"", {"X-Test1": "test-simple-header"},
                 "8F9AybcRw+PLxnvT+H0JRkjROrrUgsxJTnRXMzqvcwY=", id="signed header"),
    pytest.param("GET", "/testapi/v1/t4", b"", {"X-Test1": '"     test-header-with-spaces     "'},
                 "ucq2AbjCNtobHfCTuS38fdkl5UDdWHZhQX46fYR8CqI=", id="header with runs of spaces"),
    pytest.param("GET", "/testapi/v1/t5", b"",
                 {"X-Test2": "t2", "X-Test1": "t1", "X-Test3": "t3", "X-Extra": "this won't be included"},
                 "Knd/jc0A5Ghhizjayr0AUUvl2MZjBpS3FDSzvtq4Ixc=", id="headers in their signing order"),
])
def test_signature_matches_akamais_vectors(method: str, path: str, body: bytes,
                                          headers: dict[str, str], signature: str) -> None:
    authorization = edgegrid_authorization(
        method=method, url=BASE + path, body=body, headers=headers,
        headers_to_sign=("X-Test1", "X-Test2", "X-Test3"), max_body_bytes=2048, **CREDENTIALS)
    assert authorization == PREFIX + signature
