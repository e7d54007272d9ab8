"""A Control Room developer's first session with a client generated from
openapi/openapi.json by openapi-python-client (run by tests/api.rs,
`a_generated_python_client_drives_remote_mode`).

Usage: python generated_client.py BASE_URL API_KEY
with the generated package `keeper_client` importable (PYTHONPATH).
Prints one JSON object with what it saw; exits non-zero on any surprise.
"""

import json
import sys

from keeper_client import AuthenticatedClient
from keeper_client.api.intake import submit_discovery
from keeper_client.api.remote import acknowledge_items, export_pending_items
from keeper_client.api.sync import get_item
from keeper_client.models import (
    AckEntry,
    AckRequest,
    AckResult,
    Created,
    DiscoveryReport,
    ErrorBody,
    ExportPage,
    ItemDetail,
    Provenance,
)


def expect(condition, what):
    if not condition:
        raise SystemExit(f"unexpected: {what}")


def main():
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = AuthenticatedClient(
        base_url=base_url, token=api_key, prefix="", auth_header_name="X-API-Key"
    )
    seen = {}

    # Post two reports: the example of the document's request body, and another.
    created = []
    for description in ["Ribcage in a cave", "Spine under the ice"]:
        report = DiscoveryReport.from_dict(
            {
                "discovery_type": "\N{BONE}",
                "system_name": "Oculi",
                "location": "planet:Erren",
                "description": description,
                "username": "Explorer#1234",
            }
        )
        answer = submit_discovery.sync_detailed(client=client, body=report)
        expect(answer.status_code == 201, f"submit: {answer.status_code} {answer.content!r}")
        expect(isinstance(answer.parsed, Created), f"submit parsed as {answer.parsed!r}")
        created.append(answer.parsed.queue_id)
    seen["created"] = created

    # Page through the export, one item per page.
    exported, after, pages = [], 0, 0
    while True:
        page = export_pending_items.sync(client=client, after=after, limit=1)
        expect(isinstance(page, ExportPage), f"export parsed as {page!r}")
        pages += 1
        exported.extend(item.queue_id for item in page.items)
        if not page.has_more:
            break
        after = page.next_after
        expect(pages < 10, "the export never ended")
    seen["exported"] = exported
    seen["pages"] = pages
    expect(sorted(exported) == sorted(created), f"exported {exported}, created {created}")

    # Acknowledge them as written to VH-Database rows 9001, 9002.
    ack = acknowledge_items.sync(
        client=client,
        body=AckRequest(
            items=[
                AckEntry(queue_id=queue_id, haven_discovery_id=9001 + n)
                for n, queue_id in enumerate(exported)
            ],
            plugin=Provenance(name="generated-client", version="0.1.0", hash_="ab" * 32),
        ),
    )
    expect(isinstance(ack, AckResult), f"ack parsed as {ack!r}")
    seen["acknowledged"] = ack.acknowledged

    # Read one back.
    detail = get_item.sync(client=client, queue_id=exported[0])
    expect(isinstance(detail, ItemDetail), f"item parsed as {detail!r}")
    seen["item"] = {
        "sync_status": detail.item.sync_status,
        "haven_discovery_id": detail.item.haven_discovery_id,
        "provenance": detail.item.provenance.name,
    }

    # An unknown item: 404, parsed as the typed error model.
    missing = get_item.sync_detailed(client=client, queue_id=999999)
    expect(missing.status_code == 404, f"unknown item: {missing.status_code}")
    expect(isinstance(missing.parsed, ErrorBody), f"404 parsed as {missing.parsed!r}")
    seen["not_found"] = {
        "status": str(missing.parsed.status.value),
        "error": missing.parsed.error,
        "message": missing.parsed.message,
    }
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
