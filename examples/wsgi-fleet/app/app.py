"""A small WSGI app for nodrop's example fleet.

It reports the release it runs (header X-App-Version and body), which instance answered
(X-App-Instance), has a /health path, a /slow path and accepts POST /submit. A release
directory holds a VERSION file; a release with a BROKEN file fails its health check; a release with
a FAILING file passes its health check but answers 500 to everything else (only a probe of real
pages, nodrop's verify section, can catch it). A release with a FAILING_PATHS file answers 500 to
paths that start with one of its lines, and one with a SLOW_MS file waits that many milliseconds
before every answer but /health: both pass their health check, as a subtly bad release does, and a
canary's analysis is what catches them.
"""
import json
import os
import time
from urllib.parse import parse_qs

RELEASE = os.environ.get("APP_RELEASE", os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(RELEASE, "VERSION"), encoding="utf-8") as f:
    VERSION = f.read().strip()
BROKEN = os.path.exists(os.path.join(RELEASE, "BROKEN"))
FAILING = os.path.exists(os.path.join(RELEASE, "FAILING"))
INSTANCE = os.environ.get("APP_INSTANCE", "?")


def _read_lines(name):
    try:
        with open(os.path.join(RELEASE, name), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


FAILING_PATHS = _read_lines("FAILING_PATHS")
SLOW_MS = int((_read_lines("SLOW_MS") or ["0"])[0])


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    method = environ.get("REQUEST_METHOD", "GET")
    headers = [("Content-Type", "application/json"), ("X-App-Version", VERSION), ("X-App-Instance", INSTANCE)]

    if path == "/health":
        if BROKEN:
            start_response("503 Service Unavailable", headers)
            return [json.dumps({"status": "broken", "version": VERSION}).encode()]
        start_response("200 OK", headers)
        return [json.dumps({"status": "ok", "version": VERSION}).encode()]

    if SLOW_MS:
        time.sleep(SLOW_MS / 1000)

    if FAILING or any(path.startswith(p) for p in FAILING_PATHS):
        start_response("500 Internal Server Error", headers)
        return [json.dumps({"error": "this release fails every page but /health", "version": VERSION}).encode()]

    if path == "/events":
        # Server-sent events for `ms` milliseconds: a long-lived connection, as a WebSocket would be.
        ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["10000"])[0])
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("X-Accel-Buffering", "no"), ("X-App-Version", VERSION), ("X-App-Instance", INSTANCE)])

        def events():
            end = time.time() + min(ms, 120_000) / 1000
            while time.time() < end:
                yield f"data: {VERSION} {INSTANCE}\n\n".encode()
                time.sleep(0.2)
            yield b"event: end\ndata: done\n\n"

        return events()

    if path == "/slow":
        ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["500"])[0])
        time.sleep(min(ms, 10_000) / 1000)

    body = b""
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""

    start_response("200 OK", headers)
    return [json.dumps({"version": VERSION, "instance": INSTANCE, "path": path, "received": len(body)}).encode()]
