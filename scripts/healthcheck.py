"""Container health check: request the web server's /healthz with a Host header it accepts.

Django returns 400 for a Host outside ALLOWED_HOSTS, so a request for http://127.0.0.1:8000
fails on any deployment whose ALLOWED_HOSTS names only its public host name. This script sends
the first allowed host instead. The exit status is 0 when the server reports "ok" and 1
otherwise, with the reason on standard error.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def host_header(allowed_hosts: str) -> str:
    """Pick a Host value that ALLOWED_HOSTS (comma-separated, as the settings read it) accepts."""
    for entry in (item.strip() for item in allowed_hosts.split(",")):
        if not entry:
            continue
        if entry == "*":
            return "localhost"
        # ".example.org" allows example.org and its subdomains.
        return entry.lstrip(".")
    return "localhost"


def main() -> int:
    url = os.environ.get("HEALTHCHECK_URL", DEFAULT_URL)
    timeout_s = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "4"))
    host = host_header(os.environ.get("ALLOWED_HOSTS", ""))
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        print(f"healthcheck: {url} with Host {host} returned HTTP {error.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"healthcheck: {url} with Host {host} failed: {error}", file=sys.stderr)
        return 1
    if body.get("status") != "ok":
        print(f"healthcheck: {url} reports {body}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
