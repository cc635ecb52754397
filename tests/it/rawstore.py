"""Raw object access for the integration tests, bypassing ferry (stdlib only).

The tests use it to look inside a repository on the test servers: list packs, damage one,
plant a foreign object. S3 requests are SigV4-signed with the tests' dummy keys; Azurite needs a SharedKey signature
made with the emulator's well-known development key; fake-gcs-server is reached through its
JSON API (unsigned), not the XML API ferry's client uses, which scripts/gcs_server.py serves.

Usage: python3 -c "$(cat rawstore.py)" s3|az|gs BASE_URL BUCKET OPERATION ARGS, where OPERATION is
  list PREFIX    prints one "SIZE KEY" line per object under PREFIX
  get KEY        writes the object's bytes to stdout
  put KEY FILE   replaces the object with the bytes of FILE
  forge KEY FILE HEX  the same, with ferry mirror's BLAKE3 metadata set to HEX (a lie)
  getmany KEY... writes "SIZE\n" and then the bytes, for each object in turn
  clear PREFIX   deletes every object under PREFIX
  uploads PREFIX (S3) prints the key of each unfinished multipart upload under PREFIX
  await PREFIX   returns once an object named by a 64-hex id exists under PREFIX (polls
                 in-process, for speed)
"""
import base64
import datetime
import hashlib
import hmac
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZ_VERSION = "2021-08-06"
# The dummy credentials the tests give ferry as well.
S3_KEY_ID, S3_SECRET, S3_REGION = "test", "test", "us-east-1"
OBJECT_ID = re.compile("[0-9a-fA-F]{64}")
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def az_request(method, base, container, blob, query, body=b"", meta=None):
    """A SharedKey-signed Azurite request; returns the response body."""
    date = formatdate(usegmt=True)
    headers = {"x-ms-date": date, "x-ms-version": AZ_VERSION}
    for k, v in (meta or {}).items():
        headers[f"x-ms-meta-{k}"] = v
    content_type = ""
    if method == "PUT":
        headers["x-ms-blob-type"] = "BlockBlob"
        content_type = "application/octet-stream"
        headers["Content-Type"] = content_type
    path = f"/{ACCOUNT}/{container}" + (f"/{urllib.parse.quote(blob)}" if blob else "")
    canonical_headers = "".join(
        f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-ms-")
    )
    canonical_resource = f"/{ACCOUNT}{path}" + "".join(
        f"\n{k}:{v}" for k, v in sorted(query.items())
    )
    length = str(len(body)) if body else ""
    string_to_sign = (
        f"{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n"
        + canonical_headers
        + canonical_resource
    )
    sig = base64.b64encode(
        hmac.new(base64.b64decode(KEY), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{sig}"
    url = base.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, data=body if method == "PUT" else None, method=method,
                                 headers=headers)
    with urllib.request.urlopen(req) as resp:
        return resp.read()


def s3_request(method, base, bucket, key, query, body=b"", meta=None):
    """A SigV4-signed S3 request with the tests' dummy keys; returns the response body."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    path = f"/{bucket}" + (f"/{urllib.parse.quote(key)}" if key else "")
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query.items())
    )
    payload_hash = hashlib.sha256(body).hexdigest()
    host = urllib.parse.urlparse(base).netloc
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    for k, v in (meta or {}).items():
        headers[f"x-amz-meta-{k}"] = v
    signed = ";".join(sorted(headers))
    canonical_request = "\n".join([
        method, path, canonical_query,
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload_hash,
    ])
    scope = f"{day}/{S3_REGION}/s3/aws4_request"
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    signing_key = ("AWS4" + S3_SECRET).encode()
    for part in (day, S3_REGION, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={S3_KEY_ID}/{scope}, SignedHeaders={signed}, Signature={sig}"
    )
    del headers["host"]
    if method == "PUT":
        # Without it urllib sends a form content type, and moto then parses the body as a form.
        headers["Content-Type"] = "application/octet-stream"
    url = base.rstrip("/") + path + (f"?{canonical_query}" if canonical_query else "")
    req = urllib.request.Request(url, data=body if method == "PUT" else None, method=method,
                                 headers=headers)
    with urllib.request.urlopen(req) as resp:
        return resp.read()


def gs_request(method, base, bucket, key, query, body=b"", meta=None):
    """A request to fake-gcs-server's JSON API; returns the response body."""
    name = urllib.parse.quote(key, safe="")
    headers = {}
    if method == "PUT":
        # A multipart upload: the object's metadata, then its bytes.
        method, boundary = "POST", "ferry-rawstore-boundary"
        url = f"{base}/upload/storage/v1/b/{bucket}/o?uploadType=multipart"
        head = json.dumps({"name": key, "metadata": meta or {}})
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{head}\r\n"
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + \
            body + f"\r\n--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/related; boundary={boundary}"
    elif key:
        url = f"{base}/storage/v1/b/{bucket}/o/{name}" + ("?alt=media" if method == "GET" else "")
    else:
        url = f"{base}/storage/v1/b/{bucket}/o?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                 headers=headers)
    with urllib.request.urlopen(req) as resp:
        return resp.read()


def list_objects(kind, base, bucket, prefix):
    out, marker = [], None
    while True:
        if kind == "s3":
            query = {"list-type": "2", "prefix": prefix}
            if marker:
                query["continuation-token"] = marker
            root = ET.fromstring(s3_request("GET", base, bucket, "", query))
            for item in root.iter(f"{S3_NS}Contents"):
                out.append((int(item.find(f"{S3_NS}Size").text), item.find(f"{S3_NS}Key").text))
            marker = root.findtext(f"{S3_NS}NextContinuationToken")
        elif kind == "gs":
            query = {"prefix": prefix}
            if marker:
                query["pageToken"] = marker
            page = json.loads(gs_request("GET", base, bucket, "", query))
            for item in page.get("items", []):
                out.append((int(item["size"]), item["name"]))
            marker = page.get("nextPageToken")
        else:
            query = {"restype": "container", "comp": "list", "prefix": prefix}
            if marker:
                query["marker"] = marker
            root = ET.fromstring(az_request("GET", base, bucket, "", query))
            for blob in root.iter("Blob"):
                size = int(blob.find("Properties").findtext("Content-Length"))
                out.append((size, blob.findtext("Name")))
            marker = root.findtext("NextMarker")
        if not marker:
            return out


def main():
    kind, base, bucket, op = sys.argv[1:5]
    arg = sys.argv[5] if len(sys.argv) > 5 else ""
    request = {"s3": s3_request, "gs": gs_request}.get(kind, az_request)
    try:
        if op == "list":
            for size, key in list_objects(kind, base, bucket, arg):
                print(size, key)
        elif op == "get":
            sys.stdout.buffer.write(request("GET", base, bucket, arg, {}))
        elif op == "put":
            with open(sys.argv[6], "rb") as f:
                request("PUT", base, bucket, arg, {}, f.read())
        elif op == "await":
            deadline = time.monotonic() + 120
            while not any(OBJECT_ID.fullmatch(key.rsplit("/", 1)[-1])
                          for _, key in list_objects(kind, base, bucket, arg)):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no object under {arg!r} after 120 s")
                time.sleep(0.005)
        elif op == "getmany":
            for key in sys.argv[5:]:
                body = request("GET", base, bucket, key, {})
                sys.stdout.buffer.write(f"{len(body)}\n".encode() + body)
        elif op == "forge":
            name = "ferry_blake3" if kind == "az" else "ferry-blake3"
            with open(sys.argv[6], "rb") as f:
                request("PUT", base, bucket, arg, {}, f.read(), meta={name: sys.argv[7]})
        elif op == "uploads":
            root = ET.fromstring(s3_request("GET", base, bucket, "", {"uploads": "", "prefix": arg}))
            for upload in root.iter(f"{S3_NS}Upload"):
                print(upload.findtext(f"{S3_NS}Key"))
        elif op == "clear":
            for _, key in list_objects(kind, base, bucket, arg):
                request("DELETE", base, bucket, key, {})
        else:
            raise SystemExit(f"unknown operation {op}")
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{op} {arg!r} on {kind} failed: {err.code} {err.read()[:300]!r}")


if __name__ == "__main__":
    main()
