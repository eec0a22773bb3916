import Foundation

/// Splits the text of a file holding one JSON array into its elements' texts, each with the line it
/// starts on, without parsing them: each element is then read (and, when bad, reported or skipped) on
/// its own, as a line of a JSON-lines file is. Only the array's own structure is checked here (strings,
/// nesting, commas); what is inside an element is `JSONSerialization`'s to judge.
enum JSONArrayScanner {
    /// The array's structure is broken: where and why.
    struct Malformed: Error, Equatable {
        let line: Int
        let reason: String
    }

    private static let whitespace: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
    private static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// Whether the first byte that is not whitespace (after a UTF-8 byte-order mark) is `[`. A
    /// JSON-lines file of records never starts so.
    static func startsWithArray(_ data: Data) -> Bool {
        let body = data.starts(with: byteOrderMark) ? data.dropFirst(byteOrderMark.count) : data[...]
        return body.first { !whitespace.contains($0) } == UInt8(ascii: "[")
    }

    /// The elements of the array `data` holds, in order, each with the 1-based line its text starts on
    /// (its text nil where it is not valid UTF-8). Throws `Malformed` for an array that is not closed,
    /// an empty element (`[1,,2]`, a comma before `]`), or text after the closing `]`.
    static func elements(of data: Data) throws -> [(line: Int, text: Substring?)] {
        let bytes = [UInt8](data)
        let n = bytes.count
        var i = bytes.starts(with: byteOrderMark) ? byteOrderMark.count : 0
        var line = 1
        func skipWhitespace() {
            while i < n, whitespace.contains(bytes[i]) {
                if bytes[i] == UInt8(ascii: "\n") { line += 1 }
                i += 1
            }
        }
        skipWhitespace()
        guard i < n, bytes[i] == UInt8(ascii: "[") else { throw Malformed(line: line, reason: "expected a JSON array") }
        i += 1
        var out: [(line: Int, text: Substring?)] = []
        skipWhitespace()
        if i < n, bytes[i] == UInt8(ascii: "]") {
            i += 1
        } else {
            elements: while true {
                skipWhitespace()
                let start = i, startLine = line
                var depth = 0, inString = false
                scan: while i < n {
                    let byte = bytes[i]
                    if byte == UInt8(ascii: "\n") { line += 1 }
                    if inString {
                        if byte == UInt8(ascii: "\\") {
                            i += 2
                            continue
                        }
                        if byte == UInt8(ascii: "\"") { inString = false }
                    } else {
                        switch byte {
                        case UInt8(ascii: "\""): inString = true
                        case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                        case UInt8(ascii: "}"), UInt8(ascii: "]"):
                            if depth == 0 { break scan }
                            depth -= 1
                        case UInt8(ascii: ","):
                            if depth == 0 { break scan }
                        default: break
                        }
                    }
                    i += 1
                }
                var end = min(i, n)
                while end > start, whitespace.contains(bytes[end - 1]) { end -= 1 }
                guard i < n else {
                    throw Malformed(line: line, reason: "the array is not closed (the file ends \(inString ? "inside a string" : "before its ]"))")
                }
                guard end > start else {
                    throw Malformed(line: startLine, reason: "an empty element in the array (a comma \(bytes[i] == UInt8(ascii: "]") ? "before ]" : "after a comma"))")
                }
                out.append((startLine, String(validating: bytes[start..<end], as: UTF8.self).map { Substring($0) }))
                switch bytes[i] {
                case UInt8(ascii: ","): i += 1
                case UInt8(ascii: "]"):
                    i += 1
                    break elements
                default:
                    throw Malformed(line: line, reason: "an unmatched \(Character(UnicodeScalar(bytes[i]))) after element \(out.count)")
                }
            }
        }
        skipWhitespace()
        guard i >= n else { throw Malformed(line: line, reason: "text after the array's closing ]") }
        return out
    }
}
