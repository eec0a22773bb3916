import Foundation
import Testing
@testable import Jinja

/// The engine against `transformers`' own Jinja environment: chat templates of the shapes the Hub's models
/// ship and a template of the language's other parts, each over a set of conversations
/// (Resources/cases.json, made by Resources/generate.py).
@Suite struct JinjaTemplateTests {
    static func fixture() throws -> [String: Any] {
        let url = try #require(Bundle.module.url(forResource: "Resources/cases", withExtension: "json"))
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    /// 2026-12-07 12:00 local time: when the fixture's `strftime_now` was called (generate.py fixes it).
    static var fixtureTime: Date {
        var parts = tm()
        parts.tm_year = 2026 - 1900
        parts.tm_mon = 11
        parts.tm_mday = 7
        parts.tm_hour = 12
        parts.tm_isdst = -1
        return Date(timeIntervalSince1970: TimeInterval(mktime(&parts)))
    }

    @Test func rendersAsTransformersDoes() throws {
        let fixture = try Self.fixture()
        let templates = try (fixture["templates"] as! [String: String]).mapValues { try JinjaTemplate($0) }
        var rendered = 0, raised = 0
        for case_ in fixture["cases"] as! [[String: Any]] {
            let name = case_["template"] as! String
            let context = case_["context"] as! [String: Any]
            if let expected = case_["text"] as? String {
                let text = try templates[name]!.render(context, now: Self.fixtureTime)
                #expect(text == expected, "\(name) with \(context)")
                rendered += 1
            } else {
                // transformers' message is "TemplateError: <the template's text>".
                let message = String((case_["error"] as! String).drop { $0 != " " }.dropFirst())
                #expect(throws: JinjaError.raised(message), "\(name) with \(context)") { try templates[name]!.render(context, now: Self.fixtureTime) }
                raised += 1
            }
        }
        #expect(rendered == 224 && raised == 42)
    }

    /// Jinja2's whitespace rules under trim_blocks and lstrip_blocks, one at a time (each as transformers'
    /// environment renders it).
    @Test func whitespaceControl() throws {
        func render(_ source: String, _ context: [String: Any] = [:]) throws -> String { try JinjaTemplate(source).render(context) }
        #expect(try render("a\n  {% if true %}\n  b\n  {% endif %}\nc") == "a\n  b\nc")
        #expect(try render("a  {%- if true -%}  b  {%- endif %}") == "ab")
        #expect(try render("x {{ 1 }}\ny") == "x 1\ny")
        #expect(try render("  {%+ if true %}b{% endif %}") == "  b")
        #expect(try render("{% if true +%}\nb{% endif %}") == "\nb")
        #expect(try render("{# note #}\na\n") == "a")
        #expect(try render("a\r\nb") == "a\nb")
        #expect(try render("{{ 'x' }} {# c -#}   y") == "x y")
        #expect(try render("  {# c #}\nz") == "z")
        #expect(try render("a {% if true %}b{% endif %}") == "a b")
        #expect(try render("\t{% set x = 1 %}\ny{{x}}") == "y1")
    }

    @Test func strftimeNowFormatsTheGivenTime() throws {
        #expect(try JinjaTemplate("{{ strftime_now('%d %b %Y') }}").render([:], now: Self.fixtureTime) == "07 Dec 2026")
    }

    /// What the engine does not read is refused naming the line; what a template cannot render is named.
    @Test func errorsNameTheProblem() throws {
        #expect(throws: JinjaError.syntax(line: 2, "the statement {% include %} is not supported")) {
            try JinjaTemplate("a\n{% include 'x' %}")
        }
        #expect(throws: JinjaError.syntax(line: 1, "the template ends before {% else or endfor %}")) {
            try JinjaTemplate("{% for m in messages %}x")
        }
        #expect(throws: JinjaError.syntax(line: 1, "a {{ tag is not closed")) { try JinjaTemplate("{{ x ") }
        #expect(throws: JinjaError.syntax(line: 1, "unexpected {% endif %}")) { try JinjaTemplate("{% endif %}") }
        #expect(throws: JinjaError.syntax(line: 1, "an expression nested more than 100 deep")) {
            try JinjaTemplate("{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}")
        }
        #expect(throws: JinjaError.syntax(line: 1, "blocks nested more than 100 deep")) {
            try JinjaTemplate(String(repeating: "{% if true %}", count: 5000) + String(repeating: "{% endif %}", count: 5000))
        }
        #expect { try JinjaTemplate("{{ messages[0].content.upper() }}").render([:]) } throws: {
            "\($0)" == "messages is undefined (reading an item of it)"
        }
        #expect { try JinjaTemplate("{{ x | frobnicate }}").render(["x": 1]) } throws: { "\($0)" == "the filter frobnicate is not supported" }
        #expect { try JinjaTemplate("{{ 'a' + 1 }}").render([:]) } throws: { "\($0)".contains("unsupported operands for +") }
        // A template cannot recurse without end or build without bound.
        #expect { try JinjaTemplate("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").render([:]) } throws: {
            "\($0)" == "the macro f calls itself (or others) more than 200 deep"
        }
        #expect { try JinjaTemplate("{{ 'ab' * 100000000 }}").render([:]) } throws: { "\($0)".contains("too long") }
        #expect { try JinjaTemplate("{% for i in range(10 ** 12) %}{% endfor %}").render([:]) } throws: { "\($0)".contains("too long") }
    }

    /// What real templates found different (a run of 198 Hub templates against transformers): the global
    /// functions are defined values, Jinja2's select/map family passes over none, and mappings take
    /// integer keys. Each expected text is transformers' own.
    @Test func globalsNoneAndIntegerKeys() throws {
        #expect(try JinjaTemplate("{{ strftime_now is defined }} {{ raise_exception is defined }} {{ namespace is callable }}").render([:]) == "True True True")
        #expect(try JinjaTemplate("{% set tools = none %}{{ tools | selectattr('type', 'equalto', 'x') | list | length }}{{ none | map(attribute='a') | list }}{{ none | reject | list }}").render([:])
                == "0[][]")
        let source = "{% set d = {0: 'zero', 512: 'k', 'a': 1} %}{{ d[0] }}{{ d[512] }} {{ d }} {{ d | tojson }} {{ 0 in d }} {{ d.keys() | list }} {{ d.get(512) }} {% for k, v in d.items() %}{{ k + 1 if k is number else k }}{% endfor %}"
        #expect(try JinjaTemplate(source).render([:]) == #"zerok {0: 'zero', 512: 'k', 'a': 1} {"0": "zero", "512": "k", "a": 1} True [0, 512, 'a'] k 1513a"#)
        #expect(try JinjaTemplate("{{ {'a': 1}.items() | list }} {{ (1, 'x') }} {{ (1,) }} {{ () }} {{ ('a', 'b')[1] }} {{ 'b' in ('a', 'b') }} {{ (1, 2) | length }} {{ [(1, 2)] | tojson }}").render([:])
                == "[('a', 1)] (1, 'x') (1,) () b True 2 [[1, 2]]")
        // Seed-OSS's budget table goes through dictsort.
        #expect(try JinjaTemplate("{% for k, v in {512: 'b', 0: 'a', 64: 'c'} | dictsort %}{{ k }}={{ v }};{% endfor %}{{ {'B': 1, 'a': 2} | dictsort }}{{ {'x': 2, 'y': 1} | dictsort(by='value', reverse=true) }}").render([:])
                == "0=a;64=c;512=b;[('a', 2), ('B', 1)][('x', 2), ('y', 1)]")
    }

    /// Mappings given as ordered pairs keep their order (as Python's dicts do), in output and JSON.
    @Test func orderedMappings() throws {
        let message: [(String, Any)] = [("role", "user"), ("content", "hi")]
        #expect(try JinjaTemplate("{{ m | tojson }} {{ m.keys() | list }}").render(["m": message]) == #"{"role": "user", "content": "hi"} ['role', 'content']"#)
        #expect(try JinjaTemplate("{{ m | tojson(true) }}").render(["m": "é🦊"]) == #""\u00e9\ud83e\udd8a""#)
        // JSON numbers keep their kind: 1 is an integer, 1.0 a float, true a boolean.
        let parsed = try JSONSerialization.jsonObject(with: Data(#"{"a": 1, "b": 1.0, "c": true, "d": -7}"#.utf8)) as! [String: Any]
        #expect(try JinjaTemplate("{{ a }} {{ b }} {{ c }} {{ d // 2 }} {{ b is float }}").render(parsed) == "1 1.0 True -4 True")
    }
}
