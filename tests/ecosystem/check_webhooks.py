"""Verifies recorded webhook deliveries with the Standard Webhooks reference library, the way
a receiver would. stdin: {"secret": ..., "deliveries": [{"headers": {...}, "body": "..."}]}.
Each must verify; a tampered body, a wrong secret and an old timestamp must not. Prints the
verified payloads as JSON."""
import json
import sys
from datetime import datetime, timedelta, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

given = json.load(sys.stdin)
hook = Webhook(given["secret"])
other = Webhook("whsec_" + "A" * 43 + "=")
verified = []
for d in given["deliveries"]:
    headers, body = d["headers"], d["body"]
    verified.append(hook.verify(body, headers))
    for name, attempt in [
        ("tampered body", lambda: hook.verify(body.replace("}", ' }', 1), headers)),
        ("wrong secret", lambda: other.verify(body, headers)),
    ]:
        try:
            attempt()
        except WebhookVerificationError:
            continue
        sys.exit(f"{name} was accepted")
    # Signed with the right secret but six minutes old: refused as a replay.
    old = datetime.now(timezone.utc) - timedelta(minutes=6)
    stale = dict(headers)
    stale["webhook-timestamp"] = str(int(old.timestamp()))
    stale["webhook-signature"] = hook.sign(headers["webhook-id"], old, body)
    try:
        hook.verify(body, stale)
    except WebhookVerificationError:
        pass
    else:
        sys.exit("an old timestamp was accepted")
print(json.dumps(verified))
