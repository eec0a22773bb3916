import Foundation

/// A Jinja2 template as Hugging Face chat templates are written, read once and rendered many times,
/// with Jinja2's semantics as `transformers`' `apply_chat_template` sets it up (`trim_blocks`,
/// `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, a `tojson` that keeps
/// non-ASCII text), so that a model's own template renders here as it does there.
///
/// The engine covers the language chat templates use: `{{ }}` output, `if`/`elif`/`else`, `for` (with
/// `loop`, unpacking, a filter and `else`), `set` (names, namespace attributes, blocks), `macro`,
/// `break`/`continue`, filter blocks, transformers' `generation` block; Python's operators, literals,
/// slices, and the filters, tests and `str`/`dict` methods of `JinjaBuiltins`. What it does not read is
/// refused with `JinjaError.syntax` naming the line.
public struct JinjaTemplate: Sendable {
    private let nodes: [JinjaNode]

    /// Reads `source`; throws `JinjaError.syntax` for what is not a template this engine reads.
    public init(_ source: String) throws {
        var parser = JinjaParser(pieces: try JinjaLexer.pieces(source))
        nodes = try parser.parseTemplate()
    }

    /// Renders with `context`'s names: JSON-like values (`NSNull`, `Bool`, `Int`, `Double`, `String`,
    /// arrays, and mappings as `[(String, Any)]` in their order or `[String: Any]`). `now` is what
    /// `strftime_now` formats. Throws `JinjaError.raised` where the template calls `raise_exception`, and
    /// `JinjaError.render` for a value it cannot use.
    public func render(_ context: [String: Any], now: Date = Date()) throws -> String {
        var renderer = JinjaRenderer(context: context.mapValues(JinjaValue.from(json:)), now: now)
        var out = ""
        _ = try renderer.render(nodes, into: &out)
        return out
    }
}
