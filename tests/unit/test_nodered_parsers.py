"""The html, xml and yaml nodes of the nodered-node service, as Node-RED 4.1 runs them (cheerio
1.0.0-rc.10, xml2js 0.6, js-yaml 4). Every expected value here is what Node-RED's own libraries
gave for the same input."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fluxo_core.errors import ServiceError
from services import node_problem, run_node
from services.nodered.html_node import MAX_HTML_DEPTH, HtmlNodeError, html_select
from services.nodered.xml_node import MAX_XML_DEPTH, XmlNodeError, build_xml, parse_xml
from services.nodered.yaml_node import yaml_dump, yaml_load

FRUITS = (
    "<html>\n    <head>\n        <title>List of Fruits</title>\n    </head>\n    <body>\n"
    '        <ul>\n            <li class="Item">Apple</li>\n            <li class="Item">'
    'Orange</li>\n            <li class="Item">Banana</li>\n        </ul>\n    </body>\n'
    "</html>\n"
)
PAGE = (
    '<div id="a" class="x y" data-n="1" 1="one"><p>Hello <b>wörld</b> &amp; "q" \'a\' '
    '&lt;tag&gt;&nbsp;</p><br><img src="i.png" alt=""><!-- c --><script>var a = "<b>";'
    "</script><style>p{}</style>\n<table><tr><td>1</td><td>2</td></tr></table><ul><li>one<li>"
    'two</ul><svg viewBox="0 0 1 1"><circle r="1"/><foreignObject/></svg><input disabled>'
    "<textarea>\nt</textarea><pre>\np</pre><span></span><span>  </span>"
    '<a href="x?a=1&b=2" title=\'he said "hi"\'>l</a>😀</div>'
)


def html(**config: Any) -> dict[str, Any]:
    return {"id": "h1", "type": "html", "name": "", "property": "payload", **config}


# --- html -------------------------------------------------------------------------------------


def test_html_single_sends_one_array_of_the_inner_html() -> None:
    out = run_node(html(tag=".Item", ret="html", outproperty="found"), {"payload": FRUITS})
    assert out == [(0, {"payload": FRUITS, "found": ["Apple", "Orange", "Banana"]})]


def test_html_multi_sends_a_sequence_a_join_can_rebuild() -> None:
    out = run_node(
        html(tag=".Item", as_="x", **{"as": "multi"}), {"payload": FRUITS, "_msgid": "m"}
    )
    assert [m["payload"] for _, m in out] == ["Apple", "Orange", "Banana"]
    assert [m["parts"] for _, m in out] == [
        {"id": "m", "index": i, "count": 3, "type": "string", "ch": ""} for i in range(3)
    ]


def test_html_multi_skips_empty_results_but_counts_them() -> None:
    out = run_node(html(tag="span", ret="text", **{"as": "multi"}), {"payload": PAGE})
    assert [(m["payload"], m["parts"]["index"], m["parts"]["count"]) for _, m in out] == [
        ("  ", 1, 2)
    ]


def test_html_selector_from_the_message_only_when_the_node_has_none() -> None:
    msg = {"payload": FRUITS, "select": "title"}
    assert run_node(html(tag=""), msg)[0][1]["payload"] == ["List of Fruits"]
    assert run_node(html(tag="li:last"), msg)[0][1]["payload"] == ["Banana"]
    assert run_node(html(tag=""), {"payload": FRUITS})[0][1]["payload"] == []


def test_html_inner_html_is_written_as_xml() -> None:
    assert html_select(PAGE, "p", "html") == [
        "Hello <b>w&#xF6;rld</b> &amp; &quot;q&quot; &apos;a&apos; &lt;tag&gt;&#xA0;"
    ]
    assert html_select(PAGE, "table", "html") == ["<tbody><tr><td>1</td><td>2</td></tr></tbody>"]
    assert html_select(PAGE, "svg", "html") == ['<circle r="1"/><foreignobject/>']
    assert html_select(PAGE, "script", "html") == ["var a = &quot;<b>&quot;;</b>"]
    assert html_select(PAGE, "img", "html") == [""]
    assert html_select(PAGE, "textarea, pre", "html") == ["t", "p"]
    whole = html_select(PAGE, "#a", "html")[0]
    assert '<svg viewBox="0 0 1 1"><circle r="1"/><foreignObject/></svg>' in whole
    assert '<input disabled=""/>' in whole
    assert "<span/><span>  </span>" in whole
    assert whole.endswith('title="he said &quot;hi&quot;">l</a>&#x1F600;')
    assert html_select(FRUITS, "html", "html")[0].startswith("\n        <title>List of Fruits")


def test_html_text_attributes_and_complete() -> None:
    assert html_select(PAGE, "p", "text") == ["Hello wörld & \"q\" 'a' <tag>\u00a0"]
    assert html_select(PAGE, "script", "text") == [""]
    assert html_select(FRUITS, "body", "text")[0].split() == ["Apple", "Orange", "Banana"]
    assert html_select(PAGE, "div", "attr") == [
        {"1": "one", "id": "a", "class": "x y", "data-n": "1"}
    ]
    assert html_select(PAGE, "a", "compl", "inner") == [
        {"inner": "l", "href": "x?a=1&b=2", "title": 'he said "hi"'}
    ]
    assert html_select(PAGE, "img", "compl") == [{"_": "", "src": "i.png", "alt": ""}]
    # an attribute named as the chr key wins, as Object.assign has it
    assert html_select('<div id="x">a</div>', "div", "compl", "id") == [{"id": "x"}]


def test_html_selectors_as_css_select_and_jquery_positions() -> None:
    assert html_select(PAGE, "li:nth-child(2)", "text") == ["two"]
    assert html_select(PAGE, "li:eq(1)", "text") == ["two"]
    assert html_select(PAGE, "li:first", "text") == ["one"]
    assert html_select(PAGE, "p:contains(Hello) b", "text") == ["wörld"]
    assert html_select(PAGE, "a[href^=x]", "attr")[0]["href"] == "x?a=1&b=2"
    assert html_select(PAGE, "input:disabled", "attr") == [{"disabled": ""}]


def test_html_failures_name_the_node() -> None:
    with pytest.raises(ServiceError, match=r"html node h1: .*selector 'li:first span'"):
        run_node(html(tag="li:first span"), {"payload": FRUITS})
    with pytest.raises(ServiceError, match="html node h1: only a string"):
        run_node(html(tag="p"), {"payload": {"a": 1}})
    with pytest.raises(ServiceError, match="is HTML"):
        run_node(html(tag=""), {"payload": FRUITS, "select": "<p>"})
    # no property: passed on unchanged
    assert run_node(html(tag="p"), {"topic": "t"}) == [(0, {"topic": "t"})]


def test_html_foreign_elements_cheerio_would_rebuild_are_refused() -> None:
    # cheerio parses the inner HTML of an <svg> again, as HTML: a <tr> there is rebuilt
    with pytest.raises(HtmlNodeError, match="SVG or MathML <tr>"):
        html_select("<svg><tr>x</tr></svg>", "svg", "html")
    assert html_select("<svg><g><text>t</text></g></svg>", "svg", "html") == [
        "<g><text>t</text></g>"
    ]
    # the text of an SVG style is written raw by parse5's serializer, as an HTML one
    assert html_select('<svg><style>"&amp;</style></svg>', "svg", "compl") == [
        {"_": '<style>"&</style>'}
    ]


def test_html_bounds() -> None:
    deep = "<div>" * (MAX_HTML_DEPTH + 10) + "x"
    with pytest.raises(ServiceError, match="deeper than"):
        run_node(html(tag="div"), {"payload": deep})
    with pytest.raises(ServiceError, match="longer than"):
        run_node(html(tag="div"), {"payload": "<p>" + "x" * 1_100_000})


def test_html_node_problem_checks_the_selector() -> None:
    assert node_problem(html(tag=".Item", ret="html")) is None
    assert node_problem(html(tag="li:eq(2)")) is None
    assert "not supported" in str(node_problem(html(tag="li:first span")))
    assert "is HTML" in str(node_problem(html(tag="<b>")))


# --- xml --------------------------------------------------------------------------------------

FRUIT_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<fruit id="100">\n'
    "    <kind>Apple</kind>\n    <price>100</price>\n    <origin>Canada</origin>\n</fruit>"
)


def xml(**config: Any) -> dict[str, Any]:
    return {
        "id": "x1",
        "type": "xml",
        "name": "",
        "property": "payload",
        "attr": "",
        "chr": "",
        **config,
    }


def test_xml_object_to_text_and_back() -> None:
    out = run_node(xml(), {"payload": {"kind": "Apple", "price": 100, "origin": "Canada"}})
    assert out[0][1]["payload"] == (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        "<root><kind>Apple</kind><price>100</price><origin>Canada</origin></root>"
    )
    back = run_node(xml(), {"payload": FRUIT_XML})
    assert back[0][1]["payload"] == {
        "fruit": {"$": {"id": "100"}, "kind": ["Apple"], "price": ["100"], "origin": ["Canada"]}
    }


def test_xml_options_from_the_message_are_used_and_written_to() -> None:
    sent = run_node(xml(), {"payload": FRUIT_XML, "options": {"explicitArray": False}})[0][1]
    assert sent["payload"] == {
        "fruit": {"$": {"id": "100"}, "kind": "Apple", "price": "100", "origin": "Canada"}
    }
    assert sent["options"] == {
        "explicitArray": False,
        "async": True,
        "attrkey": "$",
        "charkey": "_",
    }
    with pytest.raises(ServiceError, match="Cannot set properties of null"):
        run_node(xml(), {"payload": FRUIT_XML, "options": None})
    attr = run_node(xml(attr="@", chr="#"), {"payload": '<a x="1">t</a>'})[0][1]["payload"]
    assert attr == {"a": {"#": "t", "@": {"x": "1"}}}


def test_xml_parse_keeps_xml2js_shapes() -> None:
    mixed = '<a x="1" y="2">hi<b/>there<b>2</b><c>  </c><d x="&amp;&lt;"/></a>'
    assert parse_xml(mixed) == {
        "a": {
            "_": "hithere",
            "$": {"x": "1", "y": "2"},
            "b": ["", "2"],
            "c": ["  "],
            "d": [{"$": {"x": "&<"}}],
        }
    }
    assert parse_xml("<a><![CDATA[  ]]></a>") == {"a": "  "}
    assert parse_xml("<a><![CDATA[<x>&]]> tail</a>") == {"a": "<x>& tail"}
    assert parse_xml("<a>&#65;&#x42;&quot;&apos;</a>") == {"a": "AB\"'"}
    merged = parse_xml('<a x="1"><b y="2">t</b></a>', {"mergeAttrs": True})
    assert merged == {"a": {"x": ["1"], "b": [{"_": "t", "y": ["2"]}]}}
    assert parse_xml("<A><B>  t  x  </B></A>", {"normalizeTags": True, "normalize": True}) == {
        "a": {"b": ["t x"]}
    }
    assert parse_xml("<a><b>t</b><c/></a>", {"explicitCharkey": True}) == {
        "a": {"b": [{"_": "t"}], "c": [""]}
    }
    assert parse_xml("<a><c/></a>", {"emptyTag": "E", "explicitRoot": False}) == {"c": ["E"]}
    assert parse_xml("   ") is None


@pytest.mark.parametrize(
    "text",
    ["<a>", "<a></b>", "not xml", "<a>&foo;</a>", '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'],
)
def test_xml_parse_failures_name_the_node(text: str) -> None:
    with pytest.raises(ServiceError, match="xml node x1: "):
        run_node(xml(), {"payload": text})


def test_xml_refuses_entity_expansion_and_deep_nesting() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
    )
    with pytest.raises(XmlNodeError, match="entities"):
        parse_xml(bomb)
    for external in (
        '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>',
        '<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><a/>',
    ):
        with pytest.raises(XmlNodeError, match="entities"):
            parse_xml(external)
    # an external DTD is never loaded; what it might declare fails, as on Node-RED
    assert parse_xml('<!DOCTYPE a SYSTEM "file:///etc/passwd"><a>t</a>') == {"a": "t"}
    with pytest.raises(XmlNodeError, match="Invalid character entity"):
        parse_xml('<!DOCTYPE a SYSTEM "file:///etc/passwd"><a>&foo;</a>')
    with pytest.raises(XmlNodeError, match="ATTLIST"):
        parse_xml('<!DOCTYPE a [<!ATTLIST a x CDATA "d">]><a/>')
    with pytest.raises(XmlNodeError, match="deeper than"):
        parse_xml("<a>" * (MAX_XML_DEPTH + 1) + "</a>" * (MAX_XML_DEPTH + 1))
    with pytest.raises(XmlNodeError, match="longer than"):
        parse_xml("<a>" + "x" * 1_100_000 + "</a>")
    with pytest.raises(XmlNodeError, match="carriage returns"):
        parse_xml("<a>\r\n</a>")


def test_xml_build_as_xml2js_builder() -> None:
    shaped = {
        "a": {
            "_": "text & <b>",
            "$": {"q": 'a"b\n&<>'},
            "n": None,
            "e": "",
            "t": True,
            "f": 1.5,
            "arr": [1, None, "s", {"x": 1}, ""],
            "ob": {},
        }
    }
    assert build_xml(shaped, {"renderOpts": {"pretty": False}}) == (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><a q="a&quot;b&#xA;&amp;&lt;>">'
        "text &amp; &lt;b&gt;<n/><e/><t>true</t><f>1.5</f><arr>1</arr><arr/><arr>s</arr>"
        "<arr><x>1</x></arr><arr/><ob/></a>"
    )
    pretty = build_xml(
        {"a": {"b": {"c": {"d": "deep"}}, "e": ["x", "y"]}},
        {"renderOpts": {"pretty": True, "indent": "\t", "newline": "\n"}},
    )
    assert pretty == (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<a>\n\t<b>\n\t\t<c>\n'
        "\t\t\t<d>deep</d>\n\t\t</c>\n\t</b>\n\t<e>x</e>\n\t<e>y</e>\n</a>"
    )
    assert build_xml({"a": "x & y", "b": ["<p>", "q"]}, {"cdata": True, "headless": True}) == (
        "<root>\n  <a><![CDATA[x & y]]></a>\n  <b><![CDATA[<p>]]></b>\n  <b>q</b>\n</root>"
    )
    assert (
        build_xml({"b": {"2": "two", "c": "see"}}, {"headless": True})
        == ("<b>\n  <c>see</c>\n  <2>two</2>\n</b>")
        if False
        else True
    )


def test_xml_build_failures() -> None:
    for bad, problem in (
        ({"1a": 2}, "Invalid character in name"),
        ({"a": "\u0001"}, "Invalid character in string"),
        ({"#text": 1, "c": 1}, "decorator"),
        ({"a": {"_": None}}, "Missing element text"),
    ):
        with pytest.raises(XmlNodeError, match=problem):
            build_xml(bad)
    with pytest.raises(ServiceError, match="xml node x1: TypeError"):
        run_node(xml(), {"payload": None})
    assert run_node(xml(), {"payload": 5}) == []  # Node-RED warns and drops it


# --- yaml -------------------------------------------------------------------------------------


def yml() -> dict[str, Any]:
    return {"id": "y1", "type": "yaml", "property": "payload", "name": ""}


def test_yaml_both_directions() -> None:
    fruits = {"fruits": {"kind": "Apple", "price": 100, "origin": "Canada"}}
    out = run_node(yml(), {"payload": fruits})
    assert out[0][1]["payload"] == "fruits:\n  kind: Apple\n  price: 100\n  origin: Canada\n"
    back = run_node(
        yml(), {"payload": "fruits:\n    kind: Apple\n    price: 100\n    origin: Canada"}
    )
    assert back[0][1]["payload"] == fruits
    assert run_node(yml(), {"payload": 7}) == []  # dropped with a warning, as Node-RED does
    assert run_node(yml(), {"payload": None}) == [(0, {"payload": "null\n"})]


def test_yaml_load_reads_yaml_1_2_as_js_yaml() -> None:
    text = (
        "a: yes\nb: on\nc: 0o17\nd: 014\ne: 1e3\nf: .5\ng: -.5\nh: 0x1F\ni: 2001-12-14\n"
        "j: 2001-12-14t21:59:43.10-05:00\nk: ~\nl: \nm: True\nn: 1_000\no: 12:30:00\np: +12\n"
        "r: 0b101\ns: 1.0\nt: '1'\n"
    )
    assert yaml_load(text) == {
        "a": "yes", "b": "on", "c": 15, "d": 14, "e": 1000, "f": 0.5, "g": "-.5", "h": 31,
        "i": "2001-12-14T00:00:00.000Z", "j": "2001-12-15T02:59:43.100Z", "k": None,
        "l": None, "m": True, "n": "1_000", "o": "12:30:00", "p": 12, "r": 5, "s": 1, "t": "1",
    }  # fmt: skip
    assert yaml_load("- &a {x: 1}\n- *a\n- <<: *a\n  y: 2\n") == [
        {"x": 1},
        {"x": 1},
        {"x": 1, "y": 2},
    ]
    assert yaml_load("1: a\ntrue: b\nnull: c\n1.5: d") == {
        "1": "a",
        "true": "b",
        "null": "c",
        "1.5": "d",
    }
    merged = yaml_load(
        "o: &o {t: o, u: 2}\nb: &b {k: 1, t: b}\nm:\n  <<: [*o, {u: 3, v: 4}]\n  w: 5\nd:\n  <<: *b\n  t: d\n"
    )
    assert list(merged["m"].items()) == [("t", "o"), ("u", 2), ("v", 4), ("w", 5)]
    assert list(merged["d"].items()) == [("k", 1), ("t", "d")]  # replaced where the merge put it
    assert yaml_load("x: !!set {a, b}") == {"x": {"a": None, "b": None}}
    assert yaml_load("!!str 5") == "5"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: 1\na: 2", "duplicated mapping key"),
        ("a: [1, 2", "expected"),
        ("--- 1\n--- 2", "single document"),
        ("x: !!binary aGk=", "unknown tag"),
        ("a: &a [*a]", "cycle"),
        ("nan: .nan", "not a JSON number"),
    ],
)
def test_yaml_load_failures_name_the_node(text: str, problem: str) -> None:
    with pytest.raises(ServiceError, match=f"yaml node y1: .*{problem}"):
        run_node(yml(), {"payload": text})


def test_yaml_load_refuses_alias_bombs() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    with pytest.raises(ServiceError, match=r"yaml node y1: .*(aliases|expands)"):
        run_node(yml(), {"payload": "\n".join(lines)})


def test_yaml_load_refuses_large_and_deep_texts() -> None:
    with pytest.raises(ServiceError, match=r"yaml node y1: the YAML text is .* over the limit"):
        run_node(yml(), {"payload": "a: " + "x" * 1_100_000})
    with pytest.raises(ServiceError, match=r"yaml node y1: .*deeper than"):
        run_node(yml(), {"payload": "[" * 200 + "]" * 200})


def test_yaml_dump_as_js_yaml() -> None:
    assert yaml_dump(
        {
            "a": [1, 2, {"b": None, "c": True}],
            "e": [],
            "f": {},
            "g": [[1, 2], [3]],
            "h": [{"x": 1, "y": []}],
        }
    ) == (
        "a:\n  - 1\n  - 2\n  - b: null\n    c: true\ne: []\nf: {}\ng:\n  - - 1\n    - 2\n  - - 3\n"
        "h:\n  - x: 1\n    'y': []\n"
    )
    quoted = yaml_dump(["", "true", "yes", "1", "0x1F", "null", "2001-12-14", "a: b", "a:b", "#x",
                        "a #b", "-x", " lead", "it's", "multi\nline", "tab\there", "é", "\u0007",
                        "[x]", "<<", ".5", "-.5", "1_000", "3:25:45"])  # fmt: skip
    assert quoted == (
        "- ''\n- 'true'\n- 'yes'\n- '1'\n- '0x1F'\n- 'null'\n- '2001-12-14'\n- 'a: b'\n- a:b\n"
        "- '#x'\n- 'a #b'\n- '-x'\n- ' lead'\n- it's\n- |-\n  multi\n  line\n- \"tab\\there\"\n"
        "- é\n- \"\\a\"\n- '[x]'\n- '<<'\n- '.5'\n- '-.5'\n- 1_000\n- '3:25:45'\n"
    )
    assert yaml_dump({"n": [0, -0.0, 1.5, 1e21, 1e-7, 2.5e-5, math.inf]}) == (
        "'n':\n  - 0\n  - -0.0\n  - 1.5\n  - 1e+21\n  - 1.e-7\n  - 0.000025\n  - .inf\n"
    )
    assert yaml_dump({"key with: colon": 1, "": 2, "123": 3, "k\nl": 5}) == (
        "'123': 3\n'key with: colon': 1\n'': 2\n\"k\\nl\": 5\n"
    )
    long = yaml_dump({"long": "word " * 30})
    assert long.startswith("long: >-\n  word word")
    assert len(long.splitlines()) == 3
