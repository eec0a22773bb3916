/// A template's source cut into text and tags, with Jinja2's whitespace rules applied as
/// `transformers` configures them for chat templates (`trim_blocks` and `lstrip_blocks` on,
/// `keep_trailing_newline` off): `{%-`/`-%}` (and `{{-`, `{#-`, ...) strip the whitespace beside a tag,
/// a block or comment tag alone on its line takes its indentation with it, and the newline right after
/// a block or comment tag is dropped.
enum JinjaLexer {
    /// One piece of the template.
    enum Piece: Equatable {
        case text(String)
        /// `{{ ... }}`: the expression's tokens.
        case output([Token], line: Int)
        /// `{% ... %}`: the statement's tokens.
        case statement([Token], line: Int)
    }

    /// A token inside a tag.
    enum Token: Equatable {
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        /// An operator or punctuation: `+ - * / // % ** ~ == != < > <= >= = ( ) [ ] { } , . : |`.
        case symbol(String)
    }

    private enum Kind { case output, statement, comment }

    /// Cuts `source` into pieces; throws for an unclosed tag, string, or a character no token starts with.
    static func pieces(_ source: String) throws -> [Piece] {
        var text = source.replacingOccurrences(of: "\r\n", with: "\n")
        if text.hasSuffix("\n") { text.removeLast() }
        let chars = Array(text.unicodeScalars)
        let n = chars.count
        var pieces: [Piece] = []
        var buffer = String.UnicodeScalarView()
        var i = 0
        var line = 1
        func flushText() {
            if !buffer.isEmpty { pieces.append(.text(String(buffer))) }
            buffer = String.UnicodeScalarView()
        }
        while i < n {
            let c = chars[i]
            if c == "{", i + 1 < n, chars[i + 1] == "{" || chars[i + 1] == "%" || chars[i + 1] == "#" {
                let kind: Kind = chars[i + 1] == "{" ? .output : chars[i + 1] == "%" ? .statement : .comment
                var j = i + 2
                var leftStrip = false, leftKeep = false
                if j < n, chars[j] == "-" { leftStrip = true; j += 1 } else if j < n, chars[j] == "+" { leftKeep = true; j += 1 }
                // Whitespace before the tag: all of it with `-`; with lstrip_blocks, a block or comment
                // tag's indentation when only spaces and tabs precede it on its line.
                if leftStrip {
                    while let last = buffer.last, last.properties.isWhitespace { buffer.removeLast() }
                } else if kind != .output && !leftKeep {
                    // The source's line up to the tag (not the output's: a tag before it may have
                    // taken the newline) must be spaces and tabs only.
                    var run = 0
                    while i - run > 0, chars[i - run - 1] == " " || chars[i - run - 1] == "\t" { run += 1 }
                    if i - run == 0 || chars[i - run - 1] == "\n" {
                        var removed = 0
                        while removed < run, let last = buffer.last, last == " " || last == "\t" {
                            buffer.removeLast()
                            removed += 1
                        }
                    }
                }
                flushText()
                let tagLine = line
                // Find the tag's end, skipping strings and, as Jinja2's lexer does, the brackets of the
                // expression (`{{ {'a': {'b': 1}} }}` ends at the last `}}`).
                let close: Unicode.Scalar = kind == .output ? "}" : kind == .statement ? "%" : "#"
                var end = -1
                var quote: Unicode.Scalar?
                var depth = 0
                var k = j
                while k + 1 < n {
                    let d = chars[k]
                    if d == "\n" { line += 1 }
                    if kind != .comment {
                        if let q = quote {
                            if d == "\\" { k += 2; continue }
                            if d == q { quote = nil }
                            k += 1
                            continue
                        }
                        if d == "'" || d == "\"" { quote = d; k += 1; continue }
                        if d == "{" || d == "[" || d == "(" { depth += 1 }
                        if depth > 0, d == "}" || d == "]" || d == ")" {
                            depth -= 1
                            k += 1
                            continue
                        }
                    }
                    if depth == 0, d == close, chars[k + 1] == "}" { end = k; break }
                    k += 1
                }
                guard end >= 0 else {
                    throw JinjaError.syntax(line: tagLine, "a \(kind == .output ? "{{" : kind == .statement ? "{%" : "{#") tag is not closed")
                }
                var innerEnd = end
                var rightStrip = false, rightKeep = false
                if innerEnd > j, chars[innerEnd - 1] == "-" { rightStrip = true; innerEnd -= 1 } else if innerEnd > j, chars[innerEnd - 1] == "+" { rightKeep = true; innerEnd -= 1 }
                let inner = String(String.UnicodeScalarView(chars[j..<innerEnd]))
                switch kind {
                case .output: pieces.append(.output(try tokens(inner, line: tagLine), line: tagLine))
                case .statement: pieces.append(.statement(try tokens(inner, line: tagLine), line: tagLine))
                case .comment: break
                }
                // After the tag: all whitespace with `-`; with trim_blocks, one newline after a block or
                // comment tag (not after `+%}`).
                i = end + 2
                if rightStrip {
                    while i < n, chars[i].properties.isWhitespace {
                        if chars[i] == "\n" { line += 1 }
                        i += 1
                    }
                } else if kind != .output && !rightKeep, i < n, chars[i] == "\n" {
                    line += 1
                    i += 1
                }
                continue
            }
            if c == "\n" { line += 1 }
            buffer.append(c)
            i += 1
        }
        flushText()
        return pieces
    }

    /// The tokens of a tag's inside.
    static func tokens(_ source: String, line: Int) throws -> [Token] {
        let s = Array(source.unicodeScalars)
        var out: [Token] = []
        var i = 0
        let symbols2: Set<String> = ["//", "**", "==", "!=", "<=", ">="]
        let symbols1: Set<Unicode.Scalar> = ["+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"]
        while i < s.count {
            let c = s[i]
            if c.properties.isWhitespace { i += 1; continue }
            if c == "'" || c == "\"" {
                var value = String.UnicodeScalarView()
                var j = i + 1
                var closed = false
                while j < s.count {
                    let d = s[j]
                    if d == "\\", j + 1 < s.count {
                        let e = s[j + 1]
                        switch e {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        case "\\": value.append("\\")
                        case "'": value.append("'")
                        case "\"": value.append("\"")
                        case "0": value.append("\0")
                        case "u" where j + 5 < s.count:
                            let hex = String(String.UnicodeScalarView(s[(j + 2)...(j + 5)]))
                            if let code = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(code) {
                                value.append(scalar)
                                j += 6
                                continue
                            }
                            value.append("\\")
                            value.append(e)
                        default:
                            value.append("\\")
                            value.append(e)
                        }
                        j += 2
                        continue
                    }
                    if d == c { closed = true; break }
                    value.append(d)
                    j += 1
                }
                guard closed else { throw JinjaError.syntax(line: line, "a string is not closed") }
                out.append(.string(String(value)))
                i = j + 1
                continue
            }
            if ("0"..."9").contains(c) {
                var j = i
                while j < s.count, ("0"..."9").contains(s[j]) || s[j] == "_" { j += 1 }
                var isFloat = false
                if j + 1 < s.count, s[j] == ".", ("0"..."9").contains(s[j + 1]) {
                    isFloat = true
                    j += 1
                    while j < s.count, ("0"..."9").contains(s[j]) { j += 1 }
                }
                if j < s.count, s[j] == "e" || s[j] == "E" {
                    var k = j + 1
                    if k < s.count, s[k] == "+" || s[k] == "-" { k += 1 }
                    if k < s.count, ("0"..."9").contains(s[k]) {
                        isFloat = true
                        j = k
                        while j < s.count, ("0"..."9").contains(s[j]) { j += 1 }
                    }
                }
                let text = String(String.UnicodeScalarView(s[i..<j])).replacingOccurrences(of: "_", with: "")
                if isFloat {
                    guard let value = Double(text) else { throw JinjaError.syntax(line: line, "bad number \(text)") }
                    out.append(.float(value))
                } else {
                    guard let value = Int(text) else { throw JinjaError.syntax(line: line, "bad number \(text)") }
                    out.append(.integer(value))
                }
                i = j
                continue
            }
            if c == "_" || c.properties.isAlphabetic {
                var j = i
                while j < s.count, s[j] == "_" || s[j].properties.isAlphabetic || ("0"..."9").contains(s[j]) { j += 1 }
                out.append(.name(String(String.UnicodeScalarView(s[i..<j]))))
                i = j
                continue
            }
            if i + 1 < s.count {
                let two = String(String.UnicodeScalarView(s[i...(i + 1)]))
                if symbols2.contains(two) {
                    out.append(.symbol(two))
                    i += 2
                    continue
                }
            }
            if symbols1.contains(c) {
                out.append(.symbol(String(c)))
                i += 1
                continue
            }
            throw JinjaError.syntax(line: line, "unexpected character '\(c)'")
        }
        return out
    }
}

/// Why a template could not be read or rendered.
public enum JinjaError: Error, Equatable, CustomStringConvertible {
    /// The source is not a template this engine reads (line of the tag, reason).
    case syntax(line: Int, String)
    /// Rendering failed: an undefined value used where a value is needed, a type mismatch, an unknown
    /// filter or test.
    case render(String)
    /// The template called `raise_exception(message)` (how chat templates refuse a conversation).
    case raised(String)

    public var description: String {
        switch self {
        case let .syntax(line, reason): return "line \(line): \(reason)"
        case let .render(reason): return reason
        case let .raised(message): return message
        }
    }
}
