"""Validates every /api/v2 endpoint of the Herald at argv[1] against statuspage.schema.json
(JSON Schema 2020-12, formats checked), then reads it with DiscordStatus, a third-party
Statuspage v2 client from PyPI, and prints what the client saw as JSON."""
import json
import pathlib
import sys
import urllib.request
import warnings

warnings.simplefilter("error")

import jsonschema
from discordstatus import DiscordStatus

base = sys.argv[1].rstrip("/")
schema = json.loads((pathlib.Path(__file__).parent / "statuspage.schema.json").read_text())
endpoints = {
    "summary.json": "summary.json",
    "status.json": "status.json",
    "components.json": "components.json",
    "incidents.json": "incidents.json",
    "incidents/unresolved.json": "incidents.json",
    "scheduled-maintenances.json": "scheduled-maintenances.json",
    "scheduled-maintenances/upcoming.json": "scheduled-maintenances.json",
    "scheduled-maintenances/active.json": "scheduled-maintenances.json",
}
checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
# Formats are checked only with their validators installed: make sure they are.
for fmt in ("date-time", "uri", "date"):
    assert fmt in checker.checkers, f"jsonschema cannot check {fmt}"
bad = {"id": "x", "name": "x", "url": "not a url", "time_zone": "UTC", "updated_at": "yesterday"}
assert not jsonschema.Draft202012Validator(
    {**schema, "$ref": "#/$defs/page"}, format_checker=checker
).is_valid(bad), "the schema accepts a malformed page"
for path, definition in endpoints.items():
    with urllib.request.urlopen(f"{base}/api/v2/{path}") as r:
        assert r.headers["Access-Control-Allow-Origin"] == "*", path
        doc = json.load(r)
    jsonschema.validate(
        doc,
        {**schema, "$ref": f"#/$defs/{definition}"},
        cls=jsonschema.Draft202012Validator,
        format_checker=checker,
    )

client = DiscordStatus()
client.base_target = base + "/api/v2"
summary = client.summary
print(json.dumps({
    "indicator": client.status["status"]["indicator"],
    "description": summary["status"]["description"],
    "components": {c["name"]: c["status"] for c in client.components["components"]},
    "upcoming": [m["name"] for m in client.upcoming_maintenances["scheduled_maintenances"]],
    "active": [m["name"] for m in client.active_maintenances["scheduled_maintenances"]],
    "all": {m["name"]: m["status"] for m in client.all_maintenances["scheduled_maintenances"]},
    "unresolved": client.unresolved_incidents["incidents"],
    "summary_maintenances": [m["name"] for m in summary["scheduled_maintenances"]],
}))
