#!/usr/bin/env python3
"""Create a blob container on Azurite with a SharedKey-signed PUT (stdlib only).

object_store cannot create containers, so the test script uses this once per run.
Usage: azurite_container.py BLOB_URL CONTAINER   (BLOB_URL like http://127.0.0.1:10000)
"""
import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main() -> int:
    base, container = sys.argv[1].rstrip("/"), sys.argv[2]
    date = formatdate(usegmt=True)
    version = "2021-08-06"
    canonical_headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
    canonical_resource = f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
    # VERB, then 11 standard headers (all empty here, Content-Length empty for 0).
    string_to_sign = "PUT\n" + "\n" * 11 + canonical_headers + canonical_resource
    sig = base64.b64encode(
        hmac.new(base64.b64decode(KEY), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    req = urllib.request.Request(
        f"{base}/{ACCOUNT}/{container}?restype=container",
        method="PUT",
        headers={
            "x-ms-date": date,
            "x-ms-version": version,
            "Authorization": f"SharedKey {ACCOUNT}:{sig}",
            "Content-Length": "0",
        },
    )
    try:
        with urllib.request.urlopen(req) as resp:
            print(f"created container {container} ({resp.status})")
    except urllib.error.HTTPError as err:
        if err.code == 409:
            print(f"container {container} already exists")
            return 0
        print(f"creating container {container} failed: {err.code} {err.read()[:300]!r}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
