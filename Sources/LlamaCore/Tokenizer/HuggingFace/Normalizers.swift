import Foundation

/// A piece of text on its way through the pipeline: its (normalized) scalars, and how many of its
/// leading scalars come from offset 0 of the original text (what `offsets_original().0 == 0` asks,
/// for Metaspace's `prepend_scheme: first`).
struct HFPiece {
    var scalars: [Unicode.Scalar]
    var originZero: Int

    init(_ scalars: [Unicode.Scalar], originZero: Int) {
        self.scalars = scalars
        self.originZero = min(originZero, scalars.count)
    }

    /// The sub-piece `range`.
    func slice(_ range: Range<Int>) -> HFPiece {
        HFPiece(Array(scalars[range]), originZero: max(0, originZero - range.lowerBound))
    }

    /// Prepends `prefix` (aligned, as in `tokenizers`, with the first scalar); nothing if empty.
    mutating func prepend(_ prefix: [Unicode.Scalar]) {
        guard !scalars.isEmpty else { return }
        if originZero > 0 { originZero += prefix.count }
        scalars.insert(contentsOf: prefix, at: 0)
    }

    /// Replaces each matched range by `content`.
    mutating func replace(_ matches: [Range<Int>], with content: [Unicode.Scalar]) {
        guard !matches.isEmpty else { return }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count)
        var zero = 0
        var zeroOpen = true
        func add<S: Sequence>(_ s: S, zero isZero: Bool) where S.Element == Unicode.Scalar {
            for c in s {
                out.append(c)
                if zeroOpen { if isZero { zero += 1 } else { zeroOpen = false } }
            }
        }
        var last = 0
        for m in matches {
            for k in last..<m.lowerBound { add(CollectionOfOne(scalars[k]), zero: k < originZero) }
            add(content, zero: m.lowerBound < originZero)
            last = m.upperBound
        }
        for k in last..<scalars.count { add(CollectionOfOne(scalars[k]), zero: k < originZero) }
        scalars = out
        originZero = zero
    }
}

/// A `tokenizers` normalizer.
indirect enum HFNormalizer: Sendable {
    case sequence([HFNormalizer])
    case prepend([Unicode.Scalar])
    case replace(HFPattern, [Unicode.Scalar])
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)
    case stripAccents

    static let supported = "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents"

    init(json: HFJSON, path: String) throws {
        let type = json["type"]?.string ?? "<missing>"
        switch type {
        case "Sequence":
            guard let list = json["normalizers"]?.array else {
                throw LlamaError.invalidTokenizer(path: path, reason: "normalizer Sequence has no \"normalizers\" list")
            }
            self = .sequence(try list.map { try HFNormalizer(json: $0, path: path) })
        case "Prepend":
            guard let p = json["prepend"]?.string else {
                throw LlamaError.invalidTokenizer(path: path, reason: "normalizer Prepend has no \"prepend\" string")
            }
            self = .prepend(Array(p.unicodeScalars))
        case "Replace":
            let pattern = try HFPattern(json: json["pattern"], path: path, owner: "normalizer Replace")
            guard let content = json["content"]?.string else {
                throw LlamaError.invalidTokenizer(path: path, reason: "normalizer Replace has no \"content\" string")
            }
            self = .replace(pattern, Array(content.unicodeScalars))
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Strip":
            self = .strip(left: json["strip_left"]?.bool ?? true, right: json["strip_right"]?.bool ?? true)
        case "StripAccents": self = .stripAccents
        default:
            throw LlamaError.invalidTokenizer(
                path: path, reason: "normalizer type \"\(type)\" is not supported (supported: \(HFNormalizer.supported))")
        }
    }

    func normalize(_ piece: inout HFPiece) {
        switch self {
        case .sequence(let list):
            for n in list { n.normalize(&piece) }
        case .prepend(let p):
            piece.prepend(p)
        case .replace(let pattern, let content):
            let matches = pattern.matches(piece.scalars)
            piece.replace(matches, with: content)
        case .nfc, .nfd, .nfkc, .nfkd:
            let s = String(String.UnicodeScalarView(piece.scalars))
            let r: String
            switch self {
            case .nfc: r = s.precomposedStringWithCanonicalMapping
            case .nfd: r = s.decomposedStringWithCanonicalMapping
            case .nfkc: r = s.precomposedStringWithCompatibilityMapping
            default: r = s.decomposedStringWithCompatibilityMapping
            }
            let out = Array(r.unicodeScalars)
            if out != piece.scalars {
                piece = HFPiece(out, originZero: piece.originZero > 0 ? 1 : 0)
            }
        case .lowercase:
            var out: [Unicode.Scalar] = []
            out.reserveCapacity(piece.scalars.count)
            var zero = 0
            for (k, c) in piece.scalars.enumerated() {
                if c.value < 0x80 {
                    out.append((c.value >= 0x41 && c.value <= 0x5A) ? Unicode.Scalar(c.value | 0x20)! : c)
                    if k < piece.originZero { zero = out.count }
                } else {
                    out.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
                    if k < piece.originZero { zero = out.count }
                }
            }
            piece = HFPiece(out, originZero: zero)
        case .strip(let left, let right):
            var lo = 0
            var hi = piece.scalars.count
            if left { while lo < hi && HFUnicode.isSpace(piece.scalars[lo]) { lo += 1 } }
            if right { while hi > lo && HFUnicode.isSpace(piece.scalars[hi - 1]) { hi -= 1 } }
            if lo != 0 || hi != piece.scalars.count { piece = piece.slice(lo..<hi) }
        case .stripAccents:
            // tokenizers' `is_combining_mark`: every mark (Mn, Mc, Me), not only the non-spacing ones.
            let marks: Set<Unicode.GeneralCategory> = [.nonspacingMark, .spacingMark, .enclosingMark]
            let kept = piece.scalars.enumerated().filter { !marks.contains($0.element.properties.generalCategory) }
            var zero = 0
            for (i, e) in kept.enumerated() where e.offset < piece.originZero { zero = i + 1 }
            piece = HFPiece(kept.map(\.element), originZero: zero)
        }
    }
}

/// A `pattern` of Replace / Split: `{"String": "..."}` (a literal) or `{"Regex": "..."}`.
enum HFPattern: Sendable {
    case literal([Unicode.Scalar])
    case known(HFKnownPattern)
    /// A regex (Swift Regex source, compiled when used: `Regex` is not `Sendable`).
    case regex(String)

    init(json: HFJSON?, path: String, owner: String) throws {
        guard let object = json, let members = object.members else {
            throw LlamaError.invalidTokenizer(path: path, reason: "\(owner) has no \"pattern\" object")
        }
        if let s = object["String"]?.string {
            self = .literal(Array(s.unicodeScalars))
        } else if let r = object["Regex"]?.string {
            if let known = HFKnownPattern(pattern: r) {
                self = .known(known)
            } else {
                let source = Self.swiftRegexSource(r)
                do {
                    _ = try Regex(source)
                } catch {
                    throw LlamaError.invalidTokenizer(
                        path: path, reason: "\(owner) pattern Regex \"\(r)\" does not compile: \(error)")
                }
                self = .regex(source)
            }
        } else {
            throw LlamaError.invalidTokenizer(
                path: path, reason: "\(owner) pattern must be {\"String\": ...} or {\"Regex\": ...}, got \(members.map(\.key))")
        }
    }

    /// Rewrites what Oniguruma (the `tokenizers` library's regex engine, Ruby syntax) means otherwise
    /// than Swift Regex: `\d` = Nd and `\w` = Alphabetic | Mark | Nd | Pc and Latin-1's ²³¹¼½¾ (measured
    /// over every code point against the library); `\h` a hexadecimal digit (Swift: horizontal space);
    /// `.` anything but `\n` (Swift: no line ending at all); `^` at every line's start (`(?m)`) and `$`
    /// before a `\n` or at the end. `\s` is White_Space in both; `\b` is matched as a simple word
    /// boundary (`matcher()`).
    static func swiftRegexSource(_ pattern: String) -> String {
        let word = #"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u00B2\u00B3\u00B9\u00BC-\u00BE"#, hex = "0-9A-Fa-f"
        var out = String.UnicodeScalarView()
        var inClass = 0
        var escaped = false
        var anchors = false
        func add(_ s: String) { out.append(contentsOf: s.unicodeScalars) }
        for c in pattern.unicodeScalars {
            if escaped {
                escaped = false
                switch c {
                case "d": add(#"\p{Nd}"#)
                case "D": add(#"\P{Nd}"#)
                case "w": add(inClass > 0 ? word : "[" + word + "]")
                case "W": add(inClass > 0 ? #"\W"# : "[^" + word + "]")
                case "h": add(inClass > 0 ? hex : "[" + hex + "]")
                case "H": add(inClass > 0 ? #"\H"# : "[^" + hex + "]")
                default: out.append("\\"); out.append(c)
                }
                continue
            }
            switch c {
            case "\\": escaped = true; continue
            case "[": inClass += 1
            case "]": if inClass > 0 { inClass -= 1 }
            case "." where inClass == 0:
                add(#"[^\n]"#)
                continue
            case "^" where inClass == 0: anchors = true
            case "$" where inClass == 0:
                add(#"(?=\n|\z)"#)
                continue
            default: break
            }
            out.append(c)
        }
        if escaped { out.append("\\") }
        return (anchors ? "(?m)" : "") + String(out)
    }

    /// Non-overlapping matches, leftmost first, as scalar-offset ranges (may include empty ones for regexes).
    func matches(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        matcher()(s)
    }

    /// A matching function (a regex compiled once for all the pieces it is used on).
    func matcher() -> ([Unicode.Scalar]) -> [Range<Int>] {
        switch self {
        case .literal(let lit):
            return { s in Self.literalMatches(lit, in: s) }
        case .known(let k):
            return { s in k.matches(s) }
        case .regex(let source):
            guard let regex = try? Regex(source).matchingSemantics(.unicodeScalar).wordBoundaryKind(.simple) else { return { _ in [] } }
            return { s in Self.regexMatches(regex, in: s) }
        }
    }

    private static func literalMatches(_ lit: [Unicode.Scalar], in s: [Unicode.Scalar]) -> [Range<Int>] {
        guard !lit.isEmpty, s.count >= lit.count else { return [] }
        var out: [Range<Int>] = []
        var i = 0
        let first = lit[0]
        let last = s.count - lit.count
        while i <= last {
            if s[i] == first {
                var ok = true
                var k = 1
                while k < lit.count { if s[i + k] != lit[k] { ok = false; break }; k += 1 }
                if ok { out.append(i..<(i + lit.count)); i += lit.count; continue }
            }
            i += 1
        }
        return out
    }

    private static func regexMatches(_ regex: Regex<AnyRegexOutput>, in s: [Unicode.Scalar]) -> [Range<Int>] {
        let text = String(String.UnicodeScalarView(s))
        let scalars = text.unicodeScalars
        var out: [Range<Int>] = []
        var cursorIndex = scalars.startIndex
        var cursorOffset = 0
        func offset(_ idx: String.Index) -> Int {
            let d = scalars.distance(from: cursorIndex, to: idx)
            cursorIndex = idx
            cursorOffset += d
            return cursorOffset
        }
        var lastEnd: Int? = nil
        for m in text.matches(of: regex) {
            let a = offset(m.range.lowerBound)
            let b = offset(m.range.upperBound)
            // Oniguruma's iterator (as `tokenizers` uses it) drops an empty match right after a match.
            if a == b, lastEnd == b { continue }
            out.append(a..<b)
            lastEnd = b
        }
        return out
    }
}
