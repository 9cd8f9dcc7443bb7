#!/usr/bin/env python3
"""A typical Python client for MX Connect, as public client code calls the API: one
requests.Session, the Security API's JWT (re-authenticating once on a 401), and the export
(scroll) form of the authorization report, each answer parsed with response.json() into dicts
(full records) and written back out with json.dumps, one record per line.

No installable public Python client for MXC exists (none on PyPI; the public code that calls
the API is application code, not a library), so the benchmark runs this stand-in. It does what
those clients do and no more.

Usage: mxc_export.py BASE_URL XMIDS_COMMA_SEPARATED FROM TO [PAGE_SIZE] > records.jsonl
(MXC_API_KEY, and optionally MXC_USERNAME / MXC_PASSWORD, in the environment.)
"""

import json
import os
import sys

import requests

AUTH_PATH = "/security/v1/apiKey/authenticate"
EXPORT_PATH = "/report/v1/tsys/authorization/export"


class MxcClient:
    def __init__(self, base_url, api_key, username=None, password=None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.basic = (username, password) if username and password else None
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.token = None

    def authenticate(self):
        answer = self.session.post(
            self.base_url + AUTH_PATH,
            json={"value": self.api_key},
            auth=self.basic,
            timeout=60,
        )
        if answer.status_code != 200:
            raise RuntimeError(
                f"authentication failed (HTTP {answer.status_code}): {answer.text[:300]}"
            )
        self.token = answer.json()["token"]

    def post(self, path, params, body):
        if self.token is None:
            self.authenticate()
        for attempt in (1, 2):
            answer = self.session.post(
                self.base_url + path,
                params=params,
                json=body,
                headers={"Authorization": "Bearer " + self.token},
                timeout=120,
            )
            if answer.status_code == 401 and attempt == 1:
                self.authenticate()
                continue
            if answer.status_code >= 400:
                raise RuntimeError(
                    f"POST {path} failed (HTTP {answer.status_code}): {answer.text[:300]}"
                )
            return answer.json()

    def export_authorizations(self, xmids, dr_from, dr_to, size=100):
        """Yields every record of the window, oldest first, page by page."""
        params = {
            "accountNumbers": json.dumps(xmids),
            "dr_type": "abs",
            "dr_from": dr_from,
            "dr_to": dr_to,
            "sort": "transactionDateAndTime:asc",
            "size": size,
        }
        page = self.post(EXPORT_PATH, params, {})
        while True:
            records = page.get("records") or []
            if not records:
                return
            yield from records
            scroll_id = page.get("_scroll_id")
            if not scroll_id:
                raise RuntimeError("the export answer has records but no _scroll_id")
            page = self.post(EXPORT_PATH, params, {"scrollId": scroll_id})


def main():
    base_url, xmids, dr_from, dr_to = sys.argv[1:5]
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    client = MxcClient(
        base_url,
        os.environ["MXC_API_KEY"],
        os.environ.get("MXC_USERNAME"),
        os.environ.get("MXC_PASSWORD"),
    )
    out = sys.stdout
    count = 0
    for record in client.export_authorizations(xmids.split(","), dr_from, dr_to, size):
        out.write(json.dumps(record))
        out.write("\n")
        count += 1
    out.flush()
    print(f"python client: {count} records", file=sys.stderr)


if __name__ == "__main__":
    main()
