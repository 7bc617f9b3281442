"""Sends events through an official SDK to a collector, as an app would.

    driver.py posthog URL          posthog-python: three captures and an identify
    driver.py snowplow-post URL    snowplow-tracker: page view, structured and
    driver.py snowplow-get URL     self-describing events, by POST or by GET

Prints one JSON line per event sent ({"id": ..., "kind": ...}) once the SDK has
flushed, so the test can look for each record.
"""

import json
import sys
from datetime import datetime, timezone
from urllib.parse import urlparse


def posthog(url):
    from posthog import Posthog

    client = Posthog("dev", host=url, gzip=True, flush_at=10, max_retries=0)
    sent = []
    when = datetime(2026, 11, 29, 11, 58, tzinfo=timezone.utc)
    for n, (event, props) in enumerate(
        [
            ("$pageview", {"$current_url": "https://shop.example/", "page_kind": "home"}),
            ("Order Completed", {"order_id": "o-1", "revenue": 30.5, "currency": "EUR"}),
            ("video played", {"seconds": 12, "$device_id": "device-py"}),
        ]
    ):
        uuid = f"0190f3a0-0000-7000-8000-00000000000{n + 1}"
        got = client.capture(event, distinct_id="user-py", properties=props, uuid=uuid, timestamp=when)
        sent.append({"id": got, "kind": event})
    got = client.set(distinct_id="user-py", properties={"plan": "pro"}, uuid="0190f3a0-0000-7000-8000-000000000009")
    sent.append({"id": got, "kind": "$set"})
    client.flush()
    client.shutdown()
    return sent


def snowplow(url, method):
    from snowplow_tracker import Emitter, PageView, SelfDescribing, SelfDescribingJson
    from snowplow_tracker import StructuredEvent, Subject, Tracker

    parsed = urlparse(url)
    emitter = Emitter(parsed.hostname, protocol="http", port=parsed.port, method=method, batch_size=10)
    subject = Subject().set_user_id("user-sp").set_domain_user_id("device-sp").set_platform("srv")
    tracker = Tracker("sp", emitter, subject=subject, app_id="py-app", encode_base64=True)
    events = [
        ("page_view", PageView(page_url="https://shop.example/", page_title="Home")),
        ("add_to_basket", StructuredEvent(category="shop", action="add-to-basket", label="sku-1", value=2)),
        (
            "order_completed",
            SelfDescribing(
                SelfDescribingJson(
                    "iglu:com.acme/order_completed/jsonschema/1-0-0",
                    {"order_id": "o-2", "revenue": 9.5, "currency": "GBP"},
                )
            ),
        ),
    ]
    sent = [{"id": tracker.track(event), "kind": kind} for kind, event in events]
    tracker.flush()
    return sent


def main():
    kind, url = sys.argv[1], sys.argv[2]
    if kind == "posthog":
        sent = posthog(url)
    elif kind in ("snowplow-post", "snowplow-get"):
        sent = snowplow(url, kind.split("-")[1])
    else:
        sys.exit(f"unknown driver {kind}")
    for line in sent:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
