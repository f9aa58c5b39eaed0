"""summary: what a capture found, as summary.json, and rendered for people.

summary.json keeps node text as it came (JSON escapes control characters); each
rendering escapes it for its reader with the one tracer/textsafe.py function of
its kind, where it writes. Modules:

- build: summary.json from the exact kernel counters (groups) and what the recorder saw.
- merge: the captures of several nodes as one summary, each node's own kept with it.
- schema: summary.json read back (it may be anyone's file) and checked before anything renders it.
- render: a summary in the format asked for (table, Markdown, JSON, CSV, HTML); JSON and CSV.
- views: what every view for people shows: the headline, the verdicts' lines, rows of groups and flows.
- table: the text for the width it gets; markdown: for the ticket; html: one self-contained page
  with a heat map and a timeline chart (inline SVG, no scripts, nothing fetched).
"""
