import Foundation

// Unicode classes as the `tokenizers` library's regex engines (Oniguruma, Rust `regex`) and Rust's
// `char` methods define them, evaluated on Unicode scalars.
enum HFUnicode {
    /// `\p{L}`: general category L (Lu, Ll, Lt, Lm, Lo).
    @inline(__always)
    static func isLetter(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 { return (v | 0x20) >= 0x61 && (v | 0x20) <= 0x7A }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    /// `\p{N}` and Rust's `char::is_numeric`: general category N (Nd, Nl, No).
    @inline(__always)
    static func isNumber(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 { return v >= 0x30 && v <= 0x39 }
        switch c.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// `\s` (Oniguruma and Rust `regex`) and Rust's `char::is_whitespace`: the White_Space property.
    @inline(__always)
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 { return v == 0x20 || (v >= 0x09 && v <= 0x0D) }
        return c.properties.isWhitespace
    }

    /// Rust `regex`'s Unicode `\w`: Alphabetic | Mark | Decimal_Number | Connector_Punctuation | Join_Control.
    static func isRegexWord(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 {
            return (v | 0x20) >= 0x61 && (v | 0x20) <= 0x7A || (v >= 0x30 && v <= 0x39) || v == 0x5F
        }
        if c.properties.isAlphabetic || c.properties.isJoinControl { return true }
        switch c.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// Rust's `char::is_alphanumeric`-free punctuation test used by the Punctuation pre-tokenizer:
    /// ASCII punctuation or general category P.
    static func isPunctuation(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 {
            return (v >= 0x21 && v <= 0x2F) || (v >= 0x3A && v <= 0x40) || (v >= 0x5B && v <= 0x60) || (v >= 0x7B && v <= 0x7E)
        }
        switch c.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }
}

/// GPT-2's reversible byte <-> printable character mapping (`bytes_to_unicode`).
enum HFByteLevel {
    /// The character standing for each byte.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + n)!
                n += 1
            }
        }
        return table
    }()

    /// The byte each mapped character stands for.
    static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s.value] = UInt8(b) }
        return map
    }()

    /// Decodes one token's characters to bytes; nil if a character is outside the table.
    static func bytes(of token: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.count)
        for s in String(decoding: token, as: UTF8.self).unicodeScalars {
            guard let b = scalarToByte[s.value] else { return nil }
            out.append(b)
        }
        return out
    }
}

/// Hand-written matchers for the split regexes that real tokenizers use, with Oniguruma's
/// leftmost-first alternation and backtracking, on Unicode scalars. Every position of the input
/// starts a match of these patterns, so they cover the input with contiguous matches.
enum HFKnownPattern: Sendable, Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// (LLaMA 3 / cl100k with up to 3 digits, Qwen2 with 1).
    case llama3(maxDigits: Int)

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The known matcher for a regex source, if any.
    init?(pattern: String) {
        switch pattern {
        case Self.gpt2Pattern: self = .gpt2
        case Self.llama3Pattern: self = .llama3(maxDigits: 3)
        case Self.qwen2Pattern: self = .llama3(maxDigits: 1)
        default: return nil
        }
    }

    /// All matches, as scalar-offset ranges, in order.
    func matches(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(s.count / 3 + 1)
        var i = 0
        let n = s.count
        while i < n {
            let end: Int
            switch self {
            case .gpt2: end = Self.gpt2Match(s, i)
            case .llama3(let maxDigits): end = Self.llama3Match(s, i, maxDigits: maxDigits)
            }
            out.append(i..<end)
            i = end
        }
        return out
    }

    @inline(__always)
    private static func isOther(_ c: Unicode.Scalar) -> Bool {
        !HFUnicode.isSpace(c) && !HFUnicode.isLetter(c) && !HFUnicode.isNumber(c)
    }

    /// Length of a contraction (`'s`, `'re`, ...) at `i`, or 0.
    @inline(__always)
    private static func contraction(_ s: [Unicode.Scalar], _ i: Int, caseInsensitive: Bool) -> Int {
        guard s[i] == "'", i + 1 < s.count else { return 0 }
        func lower(_ c: Unicode.Scalar) -> UInt32 {
            let v = c.value
            if !caseInsensitive { return v }
            if v >= 0x41 && v <= 0x5A { return v | 0x20 }
            if v == 0x17F { return 0x73 }  // LATIN SMALL LETTER LONG S folds to "s"
            return v
        }
        let a = lower(s[i + 1])
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return 2  // s t m d
        default: break
        }
        guard i + 2 < s.count else { return 0 }
        let b = lower(s[i + 2])
        if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) { return 3 }  // re ve ll
        return 0
    }

    /// End of `\s+(?!\S)|\s+` at a whitespace position `i`.
    @inline(__always)
    private static func spaces(_ s: [Unicode.Scalar], _ i: Int) -> Int {
        var k = i
        while k < s.count && HFUnicode.isSpace(s[k]) { k += 1 }
        if k == s.count { return k }
        if k - 1 > i { return k - 1 }
        return k
    }

    private static func gpt2Match(_ s: [Unicode.Scalar], _ i: Int) -> Int {
        let n = s.count
        let c = contraction(s, i, caseInsensitive: false)
        if c > 0 { return i + c }
        var j = i
        if s[i] == " " && i + 1 < n { j = i + 1 }
        let first = s[j]
        if HFUnicode.isLetter(first) {
            var k = j + 1
            while k < n && HFUnicode.isLetter(s[k]) { k += 1 }
            return k
        }
        if HFUnicode.isNumber(first) {
            var k = j + 1
            while k < n && HFUnicode.isNumber(s[k]) { k += 1 }
            return k
        }
        if isOther(first) {
            var k = j + 1
            while k < n && isOther(s[k]) { k += 1 }
            return k
        }
        return spaces(s, i)
    }

    private static func llama3Match(_ s: [Unicode.Scalar], _ i: Int, maxDigits: Int) -> Int {
        let n = s.count
        let c = contraction(s, i, caseInsensitive: true)
        if c > 0 { return i + c }
        let first = s[i]
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if HFUnicode.isLetter(first) {
            var k = i + 1
            while k < n && HFUnicode.isLetter(s[k]) { k += 1 }
            return k
        }
        let isNewline = first == "\r" || first == "\n"
        if !isNewline && !HFUnicode.isNumber(first) && i + 1 < n && HFUnicode.isLetter(s[i + 1]) {
            var k = i + 2
            while k < n && HFUnicode.isLetter(s[k]) { k += 1 }
            return k
        }
        // \p{N}{1,maxDigits}
        if HFUnicode.isNumber(first) {
            var k = i + 1
            while k < n && k - i < maxDigits && HFUnicode.isNumber(s[k]) { k += 1 }
            return k
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        var j = i
        if first == " " && i + 1 < n { j = i + 1 }
        if isOther(s[j]) {
            var k = j + 1
            while k < n && isOther(s[k]) { k += 1 }
            while k < n && (s[k] == "\r" || s[k] == "\n") { k += 1 }
            return k
        }
        // \s*[\r\n]+  (first is whitespace here)
        var k = i
        var lastNewline = -1
        while k < n && HFUnicode.isSpace(s[k]) {
            if s[k] == "\r" || s[k] == "\n" { lastNewline = k }
            k += 1
        }
        if lastNewline >= 0 { return lastNewline + 1 }
        // \s+(?!\S)|\s+
        return spaces(s, i)
    }
}
