"""The interactive console's keys: terminal bytes -> key names -> state, fed as a user types."""

from hypothesis import given
from hypothesis import strategies as st

from tracer.sinks.keys import MAX_SEQUENCE, UiState, parse, step


def test_parse_arrows_in_both_cursor_modes_and_plain_keys():
    # CSI (normal cursor mode) and SS3 (application mode, as tmux and some SSH clients send)
    assert parse("\x1b[A\x1b[B\x1bOC\x1bOD") == (["up", "down", "right", "left"], "")
    assert parse("\x1b[5~\x1b[6~\x1b[H\x1b[4~") == (["pgup", "pgdn", "home", "end"], "")
    assert parse("q\rp\nsbh?") == (["q", "enter", "p", "enter", "s", "b", "h", "?"], "")
    assert parse("\x1b[1;5A") == (["up"], "")          # with a modifier: still up


def test_lone_escape_and_a_sequence_cut_between_reads():
    assert parse("\x1b") == ([], "\x1b")               # Esc, or the start of a sequence: wait for more
    keys, rest = parse("j\x1b[")
    assert keys == ["j"] and rest == "\x1b["
    assert parse(rest + "B") == (["down"], "")
    assert parse("\x1bq") == (["esc", "q"], "")        # Esc then a key


def test_noise_is_passed_over_and_never_buffered_without_bound():
    assert parse("\x00\x1b[Z\x1b[99~é") == (["é"], "")
    keys, rest = parse("\x1b[" + "1" * 1000)
    assert rest == "" and keys == []


@given(st.text())
def test_any_input_parses(data):
    keys, rest = parse(data)
    assert len(rest) < MAX_SEQUENCE and all(isinstance(k, str) and k for k in keys)


def run(keys, order, state=None):
    state = state or UiState()
    for k in keys:
        state = step(state, k, order)
    return state


ORDER = ["a", "b", "c", "d"]


def test_select_open_details_and_back():
    # Nothing selected: the first row stands selected (the console shows its why below the list).
    assert run(["enter"], ORDER).selected == "a" and run(["enter"], ORDER).details
    assert run(["up"], ORDER).selected == "a"
    s = run(["down", "enter"], ORDER)
    assert s.selected == "b" and s.details
    s = run(["down"], ORDER, s)                        # in the details: the next group's
    assert s.selected == "c" and s.details
    assert not run(["left"], ORDER, s).details and not run(["esc"], ORDER, s).details
    assert run(["left"], ORDER, s).selected == "c"     # back to the list, still selected
    assert run(["up", "up", "up", "up", "up"], ORDER, s).selected == "a"
    assert run(["end"], ORDER).selected == "d" and run(["end", "home"], ORDER).selected == "a"
    assert run(["right"], ORDER).details and run(["right"], ORDER).selected == "a"


def test_selection_follows_the_group_when_the_ranking_changes():
    s = run(["down"], ORDER)
    assert s.selected == "b"
    assert step(s, "down", ["d", "b", "a", "c"]).selected == "a"   # the row after b as listed now
    # a selected group that left the list (benign hidden): the first row stood selected, down goes on from it
    assert step(s, "down", ["c", "d"]).selected == "d"


def test_nothing_to_select_opens_nothing():
    s = run(["down", "enter"], [])
    assert s.selected is None and not s.details


def test_pause_sort_benign_help_quit():
    s = run(["p"], ORDER)
    assert s.paused and not run(["p", "p"], ORDER).paused
    assert [run(["s"] * n, ORDER).sort for n in range(5)] == ["rate", "count", "newest", "pod", "rate"]
    assert run(["b"], ORDER).show_benign and not run(["b", "b"], ORDER).show_benign
    assert run(["h"], ORDER).help and run(["?"], ORDER).help and not run(["h", "esc"], ORDER).help
    assert not run(["down", "enter", "h"], ORDER).details          # help replaces the details
    assert run(["q"], ORDER).quit
    assert run(["x", "F1", "space"], ORDER) == UiState()            # other keys change nothing


def test_page_keys_move_by_the_rows_on_screen():
    order = list(range(50))
    s = run(["pgdn"], order, UiState(page=18))      # from the first row, which stands selected
    assert s.selected == 18 and run(["pgup"], order, s).selected == 0
