import Foundation

/// `SplitDelimiterBehavior`.
enum HFSplitBehavior: String, Sendable {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// Splits `[0, count)` given the pattern's matches, as `NormalizedString::split` does (empty pieces dropped).
    func split(count: Int, matches: [Range<Int>], invert: Bool = false) -> [Range<Int>] {
        // find_matches: the pieces between and at matches, flagged.
        var events: [(Range<Int>, Bool)] = []
        if count == 0 {
            events.append((0..<0, false))
        } else {
            events.reserveCapacity(matches.count * 2 + 1)
            var prev = 0
            for m in matches {
                if prev != m.lowerBound { events.append((prev..<m.lowerBound, invert)) }
                events.append((m, !invert))
                prev = m.upperBound
            }
            if prev != count { events.append((prev..<count, invert)) }
        }
        var out: [(Range<Int>, Bool)] = []  // (range, remove)
        out.reserveCapacity(events.count)
        switch self {
        case .isolated:
            out = events.map { ($0.0, false) }
        case .removed:
            out = events
        case .contiguous:
            var previousMatch = false
            for (r, isMatch) in events {
                if isMatch == previousMatch, let last = out.last {
                    out[out.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    out.append((r, false))
                }
                previousMatch = isMatch
            }
        case .mergedWithPrevious:
            var previousMatch = false
            for (r, isMatch) in events {
                if isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1] = (last.0.lowerBound..<r.upperBound, false)
                } else {
                    out.append((r, false))
                }
                previousMatch = isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            for (r, isMatch) in events.reversed() {
                if isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1] = (r.lowerBound..<last.0.upperBound, false)
                } else {
                    out.append((r, false))
                }
                previousMatch = isMatch
            }
            out.reverse()
        }
        return out.compactMap { ($0.1 || $0.0.isEmpty) ? nil : $0.0 }
    }
}

/// Matches of a per-scalar predicate: each matching scalar is its own match.
func hfScalarMatches(_ s: [Unicode.Scalar], _ predicate: (Unicode.Scalar) -> Bool) -> [Range<Int>] {
    var out: [Range<Int>] = []
    for (i, c) in s.enumerated() where predicate(c) { out.append(i..<(i + 1)) }
    return out
}

/// Metaspace's `prepend_scheme`.
enum HFPrependScheme: String, Sendable {
    case always, first, never
}

/// A `tokenizers` pre-tokenizer.
indirect enum HFPreTokenizer: Sendable {
    case sequence([HFPreTokenizer])
    case metaspace(replacement: Unicode.Scalar, scheme: HFPrependScheme, split: Bool)
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(HFPattern, HFSplitBehavior, invert: Bool)
    case digits(individual: Bool)
    case whitespaceSplit
    case whitespace
    case punctuation(HFSplitBehavior)

    static let supported = "Sequence, Metaspace, ByteLevel, Split, Digits, WhitespaceSplit, Whitespace, Punctuation"

    init(json: HFJSON, path: String) throws {
        let type = json["type"]?.string ?? "<missing>"
        switch type {
        case "Sequence":
            guard let list = json["pretokenizers"]?.array else {
                throw LlamaError.invalidTokenizer(path: path, reason: "pre_tokenizer Sequence has no \"pretokenizers\" list")
            }
            self = .sequence(try list.map { try HFPreTokenizer(json: $0, path: path) })
        case "Metaspace":
            let (replacement, scheme, split) = try hfMetaspaceSettings(json, path: path, owner: "pre_tokenizer")
            self = .metaspace(replacement: replacement, scheme: scheme, split: split)
        case "ByteLevel":
            self = .byteLevel(addPrefixSpace: json["add_prefix_space"]?.bool ?? true,
                              useRegex: json["use_regex"]?.bool ?? true)
        case "Split":
            let pattern = try HFPattern(json: json["pattern"], path: path, owner: "pre_tokenizer Split")
            let b = json["behavior"]?.string ?? "<missing>"
            guard let behavior = HFSplitBehavior(rawValue: b) else {
                throw LlamaError.invalidTokenizer(
                    path: path, reason: "pre_tokenizer Split behavior \"\(b)\" is not supported (supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)")
            }
            self = .split(pattern, behavior, invert: json["invert"]?.bool ?? false)
        case "Digits":
            self = .digits(individual: json["individual_digits"]?.bool ?? false)
        case "WhitespaceSplit":
            self = .whitespaceSplit
        case "Whitespace":
            self = .whitespace
        case "Punctuation":
            let b = json["behavior"]?.string ?? "Isolated"
            guard let behavior = HFSplitBehavior(rawValue: b) else {
                throw LlamaError.invalidTokenizer(path: path, reason: "pre_tokenizer Punctuation behavior \"\(b)\" is not supported")
            }
            self = .punctuation(behavior)
        default:
            throw LlamaError.invalidTokenizer(
                path: path, reason: "pre_tokenizer type \"\(type)\" is not supported (supported: \(HFPreTokenizer.supported))")
        }
    }

    /// Pre-tokenizes `pieces` in place, as `PreTokenizedString::split` does (empty pieces dropped).
    func preTokenize(_ pieces: inout [HFPiece]) {
        switch self {
        case .sequence(let list):
            for p in list { p.preTokenize(&pieces) }
        case .metaspace(let replacement, let scheme, let split):
            var out: [HFPiece] = []
            out.reserveCapacity(pieces.count)
            for var piece in pieces {
                for k in piece.scalars.indices where piece.scalars[k] == " " { piece.scalars[k] = replacement }
                let startsWith = piece.scalars.first == replacement
                switch scheme {
                case .always: if !startsWith { piece.prepend([replacement]) }
                case .first: if !startsWith && piece.originZero > 0 { piece.prepend([replacement]) }
                case .never: break
                }
                if split {
                    let m = hfScalarMatches(piece.scalars) { $0 == replacement }
                    for r in HFSplitBehavior.mergedWithNext.split(count: piece.scalars.count, matches: m) {
                        out.append(piece.slice(r))
                    }
                } else if !piece.scalars.isEmpty {
                    out.append(piece)
                }
            }
            pieces = out
        case .byteLevel(let addPrefixSpace, let useRegex):
            var out: [HFPiece] = []
            out.reserveCapacity(pieces.count * 2)
            for var piece in pieces {
                if addPrefixSpace && piece.scalars.first != " " { piece.prepend([" "]) }
                if useRegex {
                    for r in HFKnownPattern.gpt2.matches(piece.scalars) where !r.isEmpty {
                        out.append(Self.byteLevelMap(piece.slice(r)))
                    }
                } else if !piece.scalars.isEmpty {
                    out.append(Self.byteLevelMap(piece))
                }
            }
            pieces = out
        case .split(let pattern, let behavior, let invert):
            let match = pattern.matcher()
            pieces = Self.splitEach(pieces, behavior: behavior, invert: invert) { match($0) }
        case .digits(let individual):
            pieces = Self.splitEach(pieces, behavior: individual ? .isolated : .contiguous, invert: false) {
                hfScalarMatches($0, HFUnicode.isNumber)
            }
        case .whitespaceSplit:
            pieces = Self.splitEach(pieces, behavior: .removed, invert: false) {
                hfScalarMatches($0, HFUnicode.isSpace)
            }
        case .whitespace:
            // `\w+|[^\w\s]+` (Rust `regex` classes), inverted and removed: keeps the runs, drops the whitespace.
            pieces = Self.splitEach(pieces, behavior: .removed, invert: true) { s in
                var out: [Range<Int>] = []
                var i = 0
                while i < s.count {
                    let c = s[i]
                    if HFUnicode.isRegexWord(c) {
                        var k = i + 1
                        while k < s.count && HFUnicode.isRegexWord(s[k]) { k += 1 }
                        out.append(i..<k); i = k
                    } else if !HFUnicode.isSpace(c) {
                        var k = i + 1
                        while k < s.count && !HFUnicode.isRegexWord(s[k]) && !HFUnicode.isSpace(s[k]) { k += 1 }
                        out.append(i..<k); i = k
                    } else {
                        i += 1
                    }
                }
                return out
            }
        case .punctuation(let behavior):
            pieces = Self.splitEach(pieces, behavior: behavior, invert: false) {
                hfScalarMatches($0, HFUnicode.isPunctuation)
            }
        }
    }

    private static func splitEach(_ pieces: [HFPiece], behavior: HFSplitBehavior, invert: Bool,
                                  matches: ([Unicode.Scalar]) -> [Range<Int>]) -> [HFPiece] {
        var out: [HFPiece] = []
        out.reserveCapacity(pieces.count)
        for piece in pieces {
            let m = matches(piece.scalars)
            for r in behavior.split(count: piece.scalars.count, matches: m, invert: invert) {
                out.append(r.count == piece.scalars.count ? piece : piece.slice(r))
            }
        }
        return out
    }

    /// ByteLevel's byte -> character mapping of a piece.
    private static func byteLevelMap(_ piece: HFPiece) -> HFPiece {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(piece.scalars.count)
        var zero = 0
        let table = HFByteLevel.byteToScalar
        for (k, c) in piece.scalars.enumerated() {
            let v = c.value
            if v < 0x80 {
                out.append(table[Int(v)])
            } else {
                for b in String(c).utf8 { out.append(table[Int(b)]) }
            }
            if k < piece.originZero { zero = out.count }
        }
        return HFPiece(out, originZero: zero)
    }
}

/// Metaspace's settings (`replacement`, `prepend_scheme` or legacy `add_prefix_space`, `split`).
func hfMetaspaceSettings(_ json: HFJSON, path: String, owner: String) throws -> (Unicode.Scalar, HFPrependScheme, Bool) {
    let rep = json["replacement"]?.string ?? "\u{2581}"
    guard rep.unicodeScalars.count == 1, let replacement = rep.unicodeScalars.first else {
        throw LlamaError.invalidTokenizer(path: path, reason: "\(owner) Metaspace replacement \"\(rep)\" is not one character")
    }
    var scheme: HFPrependScheme = .always
    if let s = json["prepend_scheme"]?.string {
        guard let parsed = HFPrependScheme(rawValue: s) else {
            throw LlamaError.invalidTokenizer(
                path: path, reason: "\(owner) Metaspace prepend_scheme \"\(s)\" is not supported (supported: always, first, never)")
        }
        scheme = parsed
    }
    if json["add_prefix_space"]?.bool == false { scheme = .never }
    let split = json["split"]?.bool ?? true
    return (replacement, scheme, split)
}
