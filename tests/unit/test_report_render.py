"""The HTML and Markdown reports: what they say (golden-ish, on real diagnoses), that
nothing from the input can inject markup, that the page needs no network, and that
gaps in a history are shown as gaps, never as zero."""

from __future__ import annotations

import copy
import html as html_lib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from dropdoc.history import Sample
from dropdoc.render import html, markdown, report_model
from dropdoc.render.report_inputs import DiagnosisInput, HistoryInput, load

FIXTURES = Path(__file__).parent.parent / "fixtures" / "report"
T0 = 1_795_660_000.0
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)> \"q\" 'a' `b` |c| *d* _e_ [f](http://evil.example/) &amp; \n# g"


def fixture_inputs(name: str):
    return load(str(FIXTURES / name))


def diagnosis(name: str) -> dict:
    document = json.loads((FIXTURES / name).read_text())
    return document.get("diagnosis", document)


class Page(HTMLParser):
    """Tags, attributes and visible text of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self._skip = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in ("style", "title")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "title")

    def handle_data(self, data):
        if not self._skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "main", "footer", "section", "div",
                "h1", "h2", "h3", "h4", "p", "span", "b", "code", "pre", "a", "ol", "ul", "li", "dl", "dt", "dd",
                "table", "caption", "thead", "tbody", "tr", "th", "td", "figure", "figcaption",
                "svg", "g", "rect", "line", "polyline", "polygon", "circle", "text"}


def assert_no_injection(page: Page) -> None:
    for tag, attrs in page.tags:
        assert tag in ALLOWED_TAGS, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "src" not in attrs


def assert_self_contained(text: str, page: Page) -> None:
    """Opens with no network: no fetched resource, no link out of the page, no script."""
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "srcset", "action", "poster", "data", "background"):
            value = attrs.get(name)
            if value is not None:
                assert name == "href" and value.startswith("#"), (tag, name, value)
    assert not re.search(r"url\(|@import|<link|<script|<iframe|<object|<embed", text, re.IGNORECASE)


# -- HTML ----------------------------------------------------------------------------------

def test_html_of_the_reference_case_says_what_and_where_and_what_to_change():
    page_text = html.render(fixture_inputs("lab-listen-overflow.json"))
    page = Page(page_text)
    text = page.text
    for expected in ("CRITICAL", "1 cause of packet loss, worst tcp.listen_overflow at 237.2 drops/s",
                     "tcp.listen_overflow", "Listen queue overflow: accept queue full", "1,186", "237.2",
                     "TcpExt.ListenOverflows", "+1,186",
                     "0.0.0.0:8080", "payments", "10406", "capped by", "somaxconn",
                     "net.core.somaxconn 16 → 2048 (per network namespace)",
                     "ip netns exec ddlab-5d69d5-srv sysctl -w net.core.somaxconn=2048",
                     "applies when pid 10406 (payments) calls listen() again",
                     "docs/runbook.md#tcp-listen-overflow",
                     "explained by tcp.listen_overflow", "only in trace: a drop without a specific reason",
                     "the tracer saw 901 of the 1186 drops", "23/23 sources read",
                     "lab scenario listen-overflow", "kernel 6.18.44-fc-v669", "netns ddlab-5d69d5-srv"):
        assert expected in text, expected
    assert text.index("transport critical") < text.index("Findings, most harmful first")
    assert_self_contained(page_text, page)
    assert_no_injection(page)


def test_html_ranks_findings_and_colours_them_by_severity():
    page = Page(html.render(fixture_inputs("diagnosis-two-causes.json")))
    sections = [attrs["class"] for tag, attrs in page.tags if tag == "section" and "finding" in attrs.get("class", "")]
    assert sections == ["card finding tone-critical"] * 2
    text = page.text
    assert text.index("1 critical udp.rcvbuf_full") < text.index("2 critical tcp.listen_overflow")
    anchors = {attrs["id"] for _, attrs in page.tags if "id" in attrs}
    links = {attrs["href"][1:] for tag, attrs in page.tags if tag == "a"}
    assert links and links <= anchors  # the ranked list links to each finding


def test_html_healthy_and_coverage_gaps():
    text = Page(html.render(fixture_inputs("diagnosis-nobody-gaps.json"))).text
    assert "HEALTHY no packet drops that need action" in text
    assert "No findings" in text
    assert "20/22 sources read" in text
    assert "nftables needs-privilege nftables chain dump: Operation not permitted (run as root)" in text
    assert "netfilter.drop : nftables rules not readable" in text.replace("netfilter.drop:", "netfilter.drop :")


def test_html_could_not_measure_is_not_healthy():
    document = diagnosis("diagnosis-healthy.json")
    document["coverage"] = dict(document["coverage"], snmp="failed", netstat="failed")
    text = Page(html.render_diagnosis(document)).text
    assert "COULD NOT MEASURE" in text and "HEALTHY" not in text


def test_an_empty_diagnosis_renders():
    minimal = {"schema": "dropdoc.diagnosis/1"}
    for renderer in (html, markdown):
        out = renderer.render([DiagnosisInput("Diagnosis", minimal, "m.json")])
        assert "No findings" in out and "n/a" in out


def test_lab_run_with_fix_shows_before_and_after():
    text = Page(html.render(fixture_inputs("lab-listen-overflow-fix.json"))).text
    assert "Lab listen-overflow: before the fix" in text and "Lab listen-overflow: after the fix" in text
    assert "applied: net.core.somaxconn 16 -> 2048 (verified)" in text


def poisoned(document: dict) -> dict:
    """Every string from the input made hostile, and hostile keys added."""
    def walk(node):
        if isinstance(node, dict):
            return {key: (value if key in ("schema", "id", "severity", "source") else walk(value))
                    for key, value in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node + EVIL if isinstance(node, str) else node
    out = walk(copy.deepcopy(document))
    finding = out["findings"][0]
    finding["id"] += EVIL
    finding["subjects"][0][EVIL] = EVIL
    finding["evidence"].append({"source": EVIL, EVIL: EVIL})
    finding["fixes"].append({"kind": EVIL, "key": EVIL, "current": [EVIL], "proposed": EVIL, "netns": EVIL,
                             "scope": "per network namespace" + EVIL, "note": EVIL})
    out["trace"]["reasons"][EVIL] = 3
    out["trace"]["unmatched"].append({"reason": EVIL, "count": 3, "benign": False, "explanation": EVIL,
                                      "locations": [{"location": EVIL, "count": 3}], "hint": EVIL})
    out["coverage"][EVIL] = EVIL
    out["not_evaluated"][EVIL] = EVIL
    return out


def test_nothing_from_the_input_can_inject_markup_into_html():
    document = poisoned(diagnosis("lab-listen-overflow.json"))
    item = DiagnosisInput("Diagnosis", document, EVIL, [EVIL])
    history = HistoryInput(EVIL, [Sample(T0 + 1, 1.0, {EVIL: 5, "tcp.listen_overflow": 2}, (EVIL,)),
                                  Sample(T0 + 2, 1.0, {EVIL: 1}, ())],
                           {"hostname": EVIL, "kernel": EVIL, "netns": EVIL}, EVIL)
    out = html.render([item, history], title=EVIL)
    page = Page(out)
    assert_no_injection(page)
    assert_self_contained(out, page)
    assert "<script" not in out and "<img" not in out
    flat = " ".join(EVIL.split())
    assert flat in page.text  # shown, as text


# -- Markdown ------------------------------------------------------------------------------

MD = MarkdownIt("commonmark").enable("table")


def md_tables(text: str) -> list[list[list[str]]]:
    """Each table as rows of cell texts, as a GFM renderer sees them."""
    tables, rows, cells = [], None, None
    for token in MD.parse(text):
        if token.type == "table_open":
            rows = []
        elif token.type == "tr_open":
            cells = []
        elif token.type == "inline" and cells is not None:
            cells.append(token.content)
        elif token.type == "tr_close":
            rows.append(cells)
            cells = None
        elif token.type == "table_close":
            tables.append(rows)
    return tables


def test_markdown_of_the_reference_case():
    text = markdown.render(fixture_inputs("lab-listen-overflow.json"))
    rendered = MD.render(text)
    for expected in ("<strong>CRITICAL</strong>: 1 cause of packet loss",
                     "<code>tcp.listen_overflow</code>", "0.0.0.0:8080", "payments",
                     "<code>ip netns exec ddlab-5d69d5-srv sysctl -w net.core.somaxconn=2048</code>",
                     "net.core.somaxconn 16 → 2048", "<code>docs/runbook.md#tcp-listen-overflow</code>",
                     "explained by tcp.listen_overflow", "23/23 sources read"):
        assert expected in rendered, expected
    tables = md_tables(text)
    assert tables[0] == [["link", "kernel", "network", "transport", "socket"],
                         ["ok", "ok", "ok", "**critical**", "ok"]]
    for table in tables:
        assert len({len(row) for row in table}) == 1, table


def test_markdown_is_pure_text_whatever_the_input():
    document = poisoned(diagnosis("lab-listen-overflow.json"))
    history = HistoryInput(EVIL, [Sample(T0 + 1, 1.0, {EVIL: 5}, (EVIL,))], {"hostname": EVIL}, EVIL)
    text = markdown.render([DiagnosisInput(EVIL, document, EVIL, [EVIL]), history], title=EVIL)
    tokens = list(MD.parse(text))
    children = [child for token in tokens for child in (token.children or [])]
    kinds = {t.type for t in tokens} | {c.type for c in children}
    assert not kinds & {"html_inline", "html_block", "link_open", "image", "hr"}, kinds
    headings = [t for t in tokens if t.type == "heading_open"]
    assert all(t.tag in ("h1", "h2", "h3") for t in headings)
    flat = html_lib.escape(" ".join(EVIL.split()), quote=False).replace('"', "&quot;")  # as markdown-it escapes
    rendered = MD.render(text)
    assert f"<td>{flat}</td>" in rendered or f"<td>{flat}" in rendered  # a whole, literal table cell
    for table in md_tables(text):
        assert len({len(row) for row in table}) == 1


def test_code_spans_survive_backticks_and_pipes():
    assert markdown.code("a`b") == "``a`b``"
    assert markdown.code("`x`") == "`` `x` ``"
    assert markdown.code("a|b", cell=True) == "`a\\|b`"
    assert MD.render("| h |\n|---|\n| " + markdown.code("x|`y`", cell=True) + " |\n").count("<td><code>x|`y`</code></td>") == 1


@pytest.mark.parametrize("value", ["- item", "+ item", "1. first", "12) x", "---", "===", "# title", "> quote",
                                   "    indented", "a\n\n- b", "&amp;", "<b>", "*x*", "_y_", "[l](u)", "~~s~~"])
def test_escaped_text_renders_as_itself(value):
    rendered = MD.render(markdown.escape(value))
    assert rendered.startswith("<p>"), rendered
    assert html_lib.unescape(re.sub(r"</?p>|\n", "", rendered)) == " ".join(value.split())


# -- histories -----------------------------------------------------------------------------

def history_with_gaps() -> HistoryInput:
    samples = [Sample(T0 + i, 1.0, {"tcp.listen_overflow": 40 if i % 10 < 3 else 0}, ("cloud.allowance_exceeded",))
               for i in range(1, 61) if not 20 <= i < 35]                     # 15 s not recording
    samples += [Sample(T0 + 60 + i, 1.0, {}, ("cloud.allowance_exceeded", "netfilter.drop")) for i in range(1, 4)]
    return HistoryInput("History", samples, {"hostname": "web-1", "netns": "srv"}, "h.db")


def test_html_history_charts_gaps_as_gaps():
    out = html.render([history_with_gaps()])
    page = Page(out)
    text = page.text
    assert "Drop rate per layer" in text and "tcp.listen_overflow (transport)" in text
    assert "no data" in text
    gap_rects = [attrs for tag, attrs in page.tags if tag == "g" and attrs.get("class") == "gap"]
    assert gap_rects, "the time nobody recorded is shaded"
    assert "not recording from" in text and "15 s" in text
    assert "netfilter.drop 3 3.0 s" in text        # unmeasurable intervals listed
    assert "Never measurable on this host" in text and "cloud.allowance_exceeded" in text
    total = sum(s.drops.get("tcp.listen_overflow", 0) for s in history_with_gaps().samples)
    assert f"tcp.listen_overflow transport {total} 40.0" in text  # total and peak per finding
    assert_self_contained(out, page)


def test_markdown_history_table_says_no_data_not_zero():
    text = markdown.render([history_with_gaps()])
    layer_table = next(t for t in md_tables(text) if t[0][0] == "time")
    assert layer_table[0] == ["time", "link", "kernel", "network", "transport", "socket"]
    gap_rows = [row for row in layer_table if row[1:] == ["no data"] * 5]
    assert gap_rows, layer_table
    assert any(row[4] == "**40.0**" for row in layer_table)
    # the last seconds: netfilter.drop unmeasurable -> network unknown, transport measured
    assert layer_table[-1][3] == "no data" and layer_table[-1][4] == "0"


def test_an_empty_history_says_so():
    empty = HistoryInput("History", [], {}, "h.db")
    assert "holds no samples yet" in Page(html.render([empty])).text
    assert "holds no samples yet" in markdown.render([empty])


def test_a_long_history_is_bucketed_and_stays_small():
    samples = [Sample(T0 + i, 1.0, {"tcp.listen_overflow": 500} if i == 4000 else {}, ()) for i in range(1, 20001)]
    out = html.render([HistoryInput("History", samples, {}, "h.db")])
    assert len(out) < 400_000
    assert "highest rate in each" in out
    text = markdown.render([HistoryInput("History", samples, {}, "h.db")])
    layer_table = next(t for t in md_tables(text) if t[0][0] == "time")
    assert len(layer_table) <= 26
    assert any("**500.0**" in row for row in layer_table)  # a one-second burst survives bucketing


@settings(max_examples=500, deadline=None)
@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
       | st.text(alphabet="-+=*_`~#>|[]()!<>&;:\\/ 1.)abc\n\t", max_size=30))
def test_any_text_escaped_renders_as_exactly_itself(value):
    expected = markdown.one_line(value).strip()
    rendered = MD.render(markdown.escape(value))
    if not expected:
        assert rendered.strip() == ""
    else:
        assert rendered == "<p>" + html_lib.escape(expected, quote=False).replace('"', "&quot;") + "</p>\n"


@settings(max_examples=300, deadline=None)
@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)
       | st.text(alphabet="`| ab\\", max_size=20))
def test_any_text_in_a_code_span_stays_literal_also_in_a_table(value):
    expected = markdown.one_line(value).strip()
    assume(expected)
    shown = html_lib.escape(expected, quote=False).replace('"', "&quot;")
    assert MD.render(markdown.code(value)) == f"<p><code>{shown}</code></p>\n"
    table = MD.render("| h |\n|---|\n| " + markdown.code(value, cell=True) + " |\n")
    assert f"<td><code>{shown}</code></td>" in table


GFM = MarkdownIt("commonmark").enable(["table", "strikethrough"])
MARKUP_TEXT = st.lists(st.sampled_from([*"ab1 _*`[]()<>!#|~\\&;-+=.:/?\t\n", "amp", "http", "#x27"]),
                       max_size=16).map("".join)


def _inline_text(tokens) -> str:
    """The text a reader sees in the inline tokens: literal, with nothing made markup."""
    out = []
    for token in tokens:
        for child in token.children or []:
            assert child.type in ("text", "softbreak"), (child.type, child.content)
            out.append(child.content)
    return "".join(out)


@settings(max_examples=400, deadline=None)
@given(value=MARKUP_TEXT)
def test_escaped_text_is_literal_in_every_place_the_report_puts_it(value):
    flat = " ".join(value.split())
    assume(flat)
    escaped = markdown.escape(value)
    for line, kind in ((escaped, "paragraph_open"), ("## x " + escaped, "heading_open"),
                       ("- " + escaped, "bullet_list_open"), (f"| h |\n|---|\n| {escaped} |", "table_open")):
        tokens = GFM.parse(line)
        assert tokens[0].type == kind, (line, tokens[0].type)
        inline = [t for t in tokens if t.type == "inline"]
        seen = _inline_text(inline if kind != "table_open" else inline[1:])
        prefix = "x " if kind == "heading_open" else ""
        assert " ".join(seen.split()) == prefix + flat, (line, seen)


def test_raw_markdown_keeps_arrows_anchors_and_paths_readable():
    assert markdown.escape("net.core.somaxconn 16 -> 2048 (verified)") == "net.core.somaxconn 16 -> 2048 (verified)"
    assert markdown.escape("docs/runbook.md#tcp-listen-overflow !") == "docs/runbook.md#tcp-listen-overflow !"
    assert markdown.escape(r"C:\dir\file a < b") == r"C:\dir\file a < b"
    assert markdown.escape("incident #") == r"incident \#"   # would close a heading
    text = markdown.render(fixture_inputs("lab-listen-overflow-fix.json"))
    assert "- applied: net.core.somaxconn 16 -> 2048 (verified)" in text


# -- found by trying to break it (each test names the input that did) ----------------------

def one_sample_history(**meta) -> HistoryInput:
    return HistoryInput("History", [Sample(T0 + 1, 1.0, {"tcp.listen_overflow": 10}, ())], meta, "h.db")


def test_markdown_facts_of_a_history_are_separate_list_items():
    # a 1-sample history: "(100 % of the period)- not recording: never" ran into one item
    for samples in (one_sample_history().samples, [*one_sample_history().samples, Sample(float("nan"), 1.0, {}, ())]):
        text = markdown.render([HistoryInput("History", samples, {}, "h.db")])
        items = [t for t in GFM.parse(text) if t.type == "list_item_open"]
        assert len(items) == 3, text
        assert "\n- not recording: never\n" in text


def test_huge_counts_are_exact_and_rates_readable():
    # a u64 counter and 70,000,000,000,000,003 drops were shown as 1.845e+19 and ...,000
    document = diagnosis("lab-listen-overflow.json")
    document["findings"][0]["drops"] = 2 ** 64 - 1
    document["findings"][0]["rate_per_s"] = 2_333_334.3
    text = markdown.render_diagnosis(document)
    assert "18,446,744,073,709,551,615" in text and "2,333,334" in text
    assert "e+" not in text
    from dropdoc.render.report_model import fmt_count, fmt_rate
    assert fmt_count(70_000_000_000_000_003) == "70,000,000,000,000,003"
    assert fmt_rate(2.5e18) == "2.5e+18" and fmt_rate(1234567.8) == "1,234,568"


@pytest.mark.parametrize("name", ["\u202etxt.exe", "pay\x1b[2Jments", "a\u2066b\u2069c", "x\x00y"])
def test_bidi_overrides_and_control_characters_are_shown_not_obeyed(name):
    # a process named "\u202etxt.exe" reversed the rest of its table row; ESC reached terminals
    document = diagnosis("lab-listen-overflow.json")
    document["findings"][0]["subjects"][0]["process"] = name
    item = DiagnosisInput("Diagnosis", document, "d.json")
    for out in (html.render([item]), markdown.render([item])):
        assert not re.search("[\u202a-\u202e\u2066-\u2069\x00-\x08\x1b]", out)
        assert "{U+" in out
    kept = "支付服务 👨\u200d👩\u200d👧 نظام الدفع"   # scripts and emoji (joiners included) stay as they are
    document["findings"][0]["subjects"][0]["process"] = kept
    assert kept in Page(html.render([item])).text and kept in markdown.render([item])


def test_inputs_from_several_hosts_say_so_and_keep_their_own_numbers():
    web, db = one_sample_history(hostname="web-1", netns="srv"), one_sample_history(hostname="db-1")
    for out in (Page(html.render([web, db])).text, markdown.render([web, db])):
        assert "This report covers 2 hosts (db-1, web-1)" in out and "nothing is added up" in out
    text = markdown.render([web, db])
    assert text.count("| `tcp.listen_overflow` | transport | 10 | 10.0 |") == 2   # each its own 10, not 20
    assert "places on web-1 (host namespace, netns srv)" in markdown.render([web, one_sample_history(hostname="web-1")])
    assert "This report covers" not in markdown.render([web, one_sample_history(hostname="web-1", netns="srv")])


def test_times_in_another_zone_carry_their_offset():
    from dropdoc.render import zones
    paris = zones.resolve("Europe/Paris")
    text = markdown.render([one_sample_history()], tz=paris)   # T0 is 2026-11-26 02:26:40 UTC
    assert "period: 2026-11-26 03:26:40 +01:00 to 2026-11-26 03:26:41 +01:00" in text
    assert "times in Europe/Paris, UTC+01:00" in text
    summer = HistoryInput("History", [Sample(T0 - 150 * 86400, 1.0, {}, ())], {}, "h.db")
    assert "+02:00" in markdown.render([summer], tz=paris)
    assert "02:26:40 UTC" in markdown.render([one_sample_history()])   # the library's default: UTC
    page = html.render([one_sample_history()], tz=zones.resolve("+05:30"))
    assert "07:56:40 +05:30" in page and "time (UTC+05:30)" in page


def test_a_long_history_chart_shows_the_mean_next_to_the_peak():
    # a 1-s burst every 977 s drew a flat line at its peak all week long
    samples = [Sample(T0 + i, 1.0, {"netfilter.drop": 12} if i % 977 == 0 else {}, ()) for i in range(1, 20001)]
    section = report_model.build([HistoryInput("History", samples, {}, "h.db")])["sections"][0]
    [chart] = section["finding_charts"]
    (peak_name, peaks), (mean_name, means) = chart["series"].items()
    assert peak_name.startswith("highest in") and mean_name.startswith("mean over")
    assert max(v for _, v in peaks) == 12.0
    assert max(v for _, v in means) < 0.5
    buckets = len(peaks)
    assert sum(v for _, v in means) * 20000 / buckets == pytest.approx(12 * (20000 // 977), rel=0.05)
    out = html.render([HistoryInput("History", samples, {}, "h.db")])
    assert "mean over" in out and "highest in" in out


def test_long_values_wrap_inside_their_cell():
    document = diagnosis("lab-listen-overflow.json")
    document["findings"][0]["subjects"][0]["process"] = "a" * 300
    out = html.render([DiagnosisInput("Diagnosis", document, "d.json")])
    assert '<td class="long">' + "a" * 300 in out and "<td>payments" not in out
    assert "td.long { overflow-wrap: anywhere" in out


def test_a_table_across_a_daylight_saving_change_gives_each_time_its_offset():
    from dropdoc.render import zones
    change = 1_792_890_000.0   # 2026-10-25 01:00 UTC: Paris goes from +02:00 to +01:00
    samples = [Sample(change - 3 * 3600 + 600 * i, 600.0, {"tcp.listen_overflow": 6000} if i == 9 else {}, ())
               for i in range(1, 37)]
    text = markdown.render([HistoryInput("History", samples, {}, "h.db")], tz=zones.resolve("Europe/Paris"))
    table = next(t for t in md_tables(text) if t[0][0] == "time")
    times = " ".join(row[0] for row in table[1:])
    assert "+02:00" in times and "+01:00" in times
    assert "+" not in " ".join(row[0] for row in next(t for t in md_tables(markdown.render(
        [HistoryInput("History", samples, {}, "h.db")])) if t[0][0] == "time")[1:])   # UTC: no offsets needed
