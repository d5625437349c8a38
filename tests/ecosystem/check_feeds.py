"""Reads the Atom feed at argv[1] with feedparser and the calendar at argv[2] with icalendar
and with vobject (two independent parsers); fails on any warning or parser complaint and
prints what was read as JSON."""
import json
import sys
import urllib.request
import warnings

warnings.simplefilter("error")

import feedparser
import icalendar
import vobject

feed = feedparser.parse(urllib.request.urlopen(sys.argv[1]).read())
if feed.bozo:
    sys.exit(f"feedparser: {feed.bozo_exception!r}")
assert feed.version == "atom10", feed.version
raw = urllib.request.urlopen(sys.argv[2]).read()
cal = icalendar.Calendar.from_ical(raw)
by_icalendar = [
    {
        "uid": str(e["UID"]),
        "sequence": int(e["SEQUENCE"]),
        "status": str(e["STATUS"]),
        "summary": str(e["SUMMARY"]),
        "url": str(e["URL"]),
        "start": e["DTSTART"].dt.isoformat(),
        "end": e["DTEND"].dt.isoformat() if "DTEND" in e else None,
        "utc": e["DTSTART"].dt.utcoffset().total_seconds() == 0,
    }
    for e in cal.walk("VEVENT")
]
parsed = vobject.readOne(raw.decode())
by_vobject = [
    {"uid": e.uid.value, "sequence": int(e.sequence.value), "status": e.status.value,
     "start": e.dtstart.value.isoformat()}
    for e in getattr(parsed, "vevent_list", [])
]
print(json.dumps({
    "feed_title": feed.feed.title,
    "entries": [
        {"id": e.id, "title": e.title, "link": e.link, "updated": e.updated,
         "summary": e.summary}
        for e in feed.entries
    ],
    "events": by_icalendar,
    "vobject": by_vobject,
}))
