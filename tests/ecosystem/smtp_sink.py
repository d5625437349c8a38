"""A real SMTP server for Herald's mail tests (aiosmtpd), keeping what it accepts.

    python smtp_sink.py PORT OUT.jsonl [count]

Each accepted message is one JSON line in OUT.jsonl: {"from", "to": [...], "data"}. Recipients
whose local part starts with "bounce" are refused for good (550 5.1.1); "defer" ones are refused
for now (451 4.7.1) the first time each is seen, then accepted. SMTPUTF8 is offered. Prints
"ready" once listening. With `count` (the benchmark), lines carry the recipients only; with
SINK_DELAY_MS set, each message takes that long to accept (a slower server).
"""

import asyncio
import json
import os
import sys

from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]
count_only = len(sys.argv) > 3 and sys.argv[3] == "count"
sink = open(out, "a", encoding="utf-8", buffering=1)
delay = int(os.environ.get("SINK_DELAY_MS", "0")) / 1000
deferred = set()


class Keep:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("bounce"):
            return "550 5.1.1 no such mailbox"
        if local.startswith("defer") and address not in deferred:
            deferred.add(address)
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if delay:
            await asyncio.sleep(delay)
        if count_only:
            sink.write(json.dumps({"to": envelope.rcpt_tos}) + "\n")
        else:
            sink.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 2.0.0 accepted"


controller = Controller(Keep(), hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
controller.start()
print("ready", flush=True)
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
finally:
    controller.stop()
