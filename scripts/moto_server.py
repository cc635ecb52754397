"""moto's S3 server, with conditional writes made atomic (started by scripts/test-servers.sh).

Real S3 decides an `If-None-Match: *` or `If-Match` write atomically: of two racing creates
of one key, exactly one succeeds. moto's threaded server checks the condition and then
stores the object in two steps, so two racing creates can both succeed and the later one
silently replaces the earlier: a lost ref update that S3 itself never produces (ferry's
concurrent-push tests caught it). Here a conditional PUT or POST (CompleteMultipartUpload)
holds one lock from its check to its store; every other request runs as moto runs it.
"""

import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_conditional = threading.Lock()
_key_response = S3Response._key_response


def _atomic_key_response(self, request, full_url):
    headers = request.headers
    if request.method in ("PUT", "POST") and (
        "If-None-Match" in headers or "If-Match" in headers
    ):
        with _conditional:
            return _key_response(self, request, full_url)
    return _key_response(self, request, full_url)


S3Response._key_response = _atomic_key_response

if __name__ == "__main__":
    main(sys.argv[1:])
