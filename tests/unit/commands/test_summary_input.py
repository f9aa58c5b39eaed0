"""`netdrop summary` reads anyone's summary.json: anything that is not one gets one line and exit status 2."""

import copy
import json
import os
import re
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer import cli
from tracer.errors import UserError
from tracer.sinks import capture
from tracer.sinks.summary import render, schema

from ..helpers import Run, one_line_error, summary_with_benign


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    """With benign groups and a pod at both ends: every key a summary.json may have."""
    return summary_with_benign(tmp_path_factory.mktemp("cap"))


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / capture.SUMMARY_FILE
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def refused(path: Path) -> str:
    with pytest.raises(UserError) as exc:
        schema.load(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_a_good_summary_loads_as_written(tmp_path, good):
    assert schema.load(write(tmp_path, good)) == good


def test_a_summary_from_before_top_flows_exact_still_loads(tmp_path, good):
    old = copy.deepcopy(good)
    del old["top_flows_exact"], old["top_flows_capacity"], old["notices"]
    for f in old["top_flows"]:
        del f["events_error"]
    assert "approximate" not in render.render(schema.load(write(tmp_path, old)), "table")


def test_a_summary_from_before_benign_and_peer_lists_everything(tmp_path, good):
    old = copy.deepcopy(good)
    del old["totals"]["benign_drops"]
    for item in old["groups"] + old["verdicts"]:
        del item["benign"]
    for g in old["groups"]:
        del g["peer"], g["peer_label"]
    out = render.render(schema.load(write(tmp_path, old)), "table", 200)
    assert "QUEUE_PURGE" in out and "not listed" not in out and "(benign)" not in out


def test_summary_hides_benign_drops_and_all_lists_them(tmp_path, good):
    write(tmp_path, good)
    default = Run(["summary", str(tmp_path)], width=160)
    assert default.status == 0 and default.err.getvalue() == ""
    assert "312 benign drops not listed (--all to list them)" in default.out.getvalue()
    assert "QUEUE_PURGE" not in default.out.getvalue()
    listed = Run(["summary", str(tmp_path), "--all"], width=160)
    assert listed.status == 0 and "QUEUE_PURGE" in listed.out.getvalue()
    assert "benign drops not listed" not in listed.out.getvalue()
    md = Run(["summary", str(tmp_path), "--format", "markdown", "--all"])
    assert "**other, benign**" in md.out.getvalue()


@pytest.mark.parametrize("text, message", [
    ("[]", "the top level is a list, expected an object"),
    ("null", "the top level is null, expected an object"),
    ("{}", 'not a netdrop capture summary (no "netdrop": "capture")'),
    ('{"netdrop": "capture"}', "window is missing"),
    ("", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ("[" * 100_000, "nested too deeply"),
    ("1" * 5000, "not valid JSON (Exceeds the limit"),
])
def test_what_is_not_a_summary(tmp_path, text, message):
    assert message in refused(write(tmp_path, text))


def test_not_utf8(tmp_path):
    path = tmp_path / "summary.json"
    path.write_bytes(b'{"netdrop": "\xff"}')
    assert refused(path).endswith("not UTF-8 text, not a netdrop summary")


def set_path(s: dict, where: tuple, value: object) -> None:
    for key in where[:-1]:
        s = s[key]
    s[where[-1]] = value


@pytest.mark.parametrize("where, value, message", [
    (("window", "seconds"), "120", "window.seconds is a string, expected a number"),
    (("node", "hostname"), 1, "node.hostname is a number, expected a string"),
    (("node", "kubernetes_node"), [], "node.kubernetes_node is a list, expected a string or null"),
    (("hooks", 0, "attached"), "yes", "hooks[0].attached is a string, expected a boolean"),
    (("filters",), [None], "filters[0] is null, expected a string"),
    (("totals", "drops"), True, "totals.drops is a boolean, expected an integer"),
    (("totals", "events_lost"), 1.5, "totals.events_lost is a number, expected an integer"),
    (("by_category", "mtu"), "10", 'by_category["mtu"] is a string, expected an integer'),
    (("verdicts", 0, "hint"), None, "verdicts[0].hint is null, expected a string"),
    (("notices",), "x", "notices is a string, expected a list"),
    (("groups", 3, "count"), "60", "groups[3].count is a string, expected an integer"),
    (("groups", 0, "pod"), "default/web", "groups[0].pod is a string, expected an object or null"),
    (("groups", 0, "benign"), "yes", "groups[0].benign is a string, expected a boolean"),
    (("groups", 0, "peer"), "default/db", "groups[0].peer is a string, expected an object or null"),
    (("groups", 0, "peer_label"), 1, "groups[0].peer_label is a number, expected a string or null"),
    (("verdicts", 0, "benign"), 0, "verdicts[0].benign is a number, expected a boolean"),
    (("totals", "benign_drops"), "312", "totals.benign_drops is a string, expected an integer"),
    (("top_flows", 0, "sport"), "53", "top_flows[0].sport is a string, expected an integer or null"),
    (("top_flows_exact",), "no", "top_flows_exact is a string, expected a boolean"),
    (("timeline", 0, "mtu"), {"n": 1}, "timeline[0].mtu is an object, expected an integer"),
    (("timeline",), {}, "timeline is an object, expected a list"),
])
def test_wrong_types_name_the_key(tmp_path, good, where, value, message):
    bad = copy.deepcopy(good)
    set_path(bad, where, value)
    assert refused(write(tmp_path, bad)).endswith(": " + message)


def test_missing_keys_and_special_numbers(tmp_path, good):
    bad = copy.deepcopy(good)
    del bad["totals"]["drops"]
    assert refused(write(tmp_path, bad)).endswith(": totals.drops is missing")
    text = re.sub(r'"rate_per_s": [^,]+', '"rate_per_s": NaN', json.dumps(good), count=1)
    assert "NaN" in text
    assert "NaN is not a number JSON allows" in refused(write(tmp_path, text))


def test_deep_nesting_where_nobody_looks(tmp_path, good):
    bad = copy.deepcopy(good)
    bad["groups"][0]["detail"] = json.loads("[" * 500 + "]" * 500)      # json.loads takes it
    assert refused(write(tmp_path, bad)).endswith(f"nested more than {schema.MAX_DEPTH} deep, not a netdrop summary")


def test_a_fifo_is_refused_at_once(tmp_path):
    path = tmp_path / "summary.json"
    os.mkfifo(path)
    result: list[str] = []

    def load() -> None:
        try:
            schema.load(path)
        except UserError as exc:
            result.append(str(exc))
    reader = threading.Thread(target=load, daemon=True)   # if open() blocked, it would stay blocked
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "load() blocked on a FIFO without a writer"
    assert result == [f"{path}: not a regular file (a FIFO), not a netdrop summary"]


def test_devices_directories_and_files_over_the_cap(tmp_path):
    assert refused(Path("/dev/zero")).endswith("not a regular file (a device), not a netdrop summary")
    (tmp_path / "x.json").mkdir()
    assert "not a regular file (a directory)" in refused(tmp_path / "x.json")
    big = tmp_path / "summary.json"
    with open(big, "wb") as f:
        f.truncate(schema.MAX_BYTES + 1)           # sparse: nothing is written, nothing read
    assert refused(big).endswith(f"{schema.MAX_BYTES + 1:,} bytes, over the 64 MiB a summary may have")


def test_cli_exit_status_2_one_line_no_traceback(tmp_path, capsys, good):
    write(tmp_path, [])
    assert cli.main(["summary", str(tmp_path)]) == 2
    assert one_line_error(capsys) == (f"netdrop: error: {tmp_path}/summary.json: the top level is a list, "
                                      f"expected an object")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["summary", str(empty)]) == 2
    assert one_line_error(capsys) == (f"netdrop: error: no capture summary at {empty}/summary.json "
                                      f"(make one with: netdrop capture --output DIR)")
    write(tmp_path, good)
    assert cli.main(["summary", str(tmp_path), "--format", "markdown"]) == 0
    assert "### What to check first" in capsys.readouterr().out


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=8)


def leaf_paths(value: object, where: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [where] + [p for k, v in value.items() for p in leaf_paths(v, where + (k,))]
    if isinstance(value, list):
        return [where] + [p for i, v in enumerate(value) for p in leaf_paths(v, where + (i,))]
    return [where]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_a_summary_loads_and_renders_or_is_refused(tmp_path, good, data):
    """Every parser of node text survives any input: a summary with any one value replaced
    by any JSON either is refused with one line or renders in every format."""
    bad = copy.deepcopy(good)
    where = data.draw(st.sampled_from(leaf_paths(bad)[1:]))
    set_path(bad, where, data.draw(JSON))
    try:
        loaded = schema.load(write(tmp_path, bad))
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    for fmt in render.FORMATS:
        render.render(loaded, fmt)
        render.render(loaded, fmt, show_benign=True)


def test_the_table_takes_the_terminals_width_and_into_a_pipe_columns_or_80(tmp_path, good):
    """Laid out for the reader: a terminal's columns; into a pipe or a file $COLUMNS, else 80."""
    write(tmp_path, good)

    def widest(**env: object) -> int:
        run = Run(["summary", str(tmp_path), "--all"], color=False, **env)
        assert run.status == 0
        return max(len(line) for line in run.out.getvalue().splitlines())
    assert widest(stdout_tty=True, width=90, columns=None) <= 90
    assert widest(stdout_tty=False, columns=None) <= 80
    assert 80 < widest(stdout_tty=False, columns=160) <= 160
