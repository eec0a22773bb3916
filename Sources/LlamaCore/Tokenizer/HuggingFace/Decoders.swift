import Foundation

/// A `tokenizers` decoder, run on tokens held as UTF-8 bytes (so a byte-fallback token can stand
/// for a lone byte when decoding one token for a stream).
indirect enum HFDecoder: Sendable {
    case sequence([HFDecoder])
    case replace(HFPattern, [Unicode.Scalar])
    case byteFallback
    case fuse
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case byteLevel
    case metaspace(replacement: Unicode.Scalar, scheme: HFPrependScheme)

    static let supported = "Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace"

    init(json: HFJSON, path: String) throws {
        let type = json["type"]?.string ?? "<missing>"
        switch type {
        case "Sequence":
            guard let list = json["decoders"]?.array else {
                throw LlamaError.invalidTokenizer(path: path, reason: "decoder Sequence has no \"decoders\" list")
            }
            self = .sequence(try list.map { try HFDecoder(json: $0, path: path) })
        case "Replace":
            let pattern = try HFPattern(json: json["pattern"], path: path, owner: "decoder Replace")
            guard let content = json["content"]?.string else {
                throw LlamaError.invalidTokenizer(path: path, reason: "decoder Replace has no \"content\" string")
            }
            self = .replace(pattern, Array(content.unicodeScalars))
        case "ByteFallback": self = .byteFallback
        case "Fuse": self = .fuse
        case "Strip":
            let c = json["content"]?.string ?? " "
            guard c.unicodeScalars.count == 1, let content = c.unicodeScalars.first else {
                throw LlamaError.invalidTokenizer(path: path, reason: "decoder Strip content \"\(c)\" is not one character")
            }
            self = .strip(content: content, start: json["start"]?.int ?? 0, stop: json["stop"]?.int ?? 0)
        case "ByteLevel": self = .byteLevel
        case "Metaspace":
            let (replacement, scheme, _) = try hfMetaspaceSettings(json, path: path, owner: "decoder")
            self = .metaspace(replacement: replacement, scheme: scheme)
        default:
            throw LlamaError.invalidTokenizer(
                path: path, reason: "decoder type \"\(type)\" is not supported (supported: \(HFDecoder.supported))")
        }
    }

    /// Whether decoding removes a leading space from the text's first token.
    var stripsLeadingSpace: Bool {
        switch self {
        case .sequence(let list): return list.contains { $0.stripsLeadingSpace }
        case .strip(let content, let start, _): return content == " " && start >= 1
        case .metaspace(_, let scheme): return scheme != .never
        default: return false
        }
    }

    /// `decode_chain`. `stream`: one token in the middle of a stream — byte-fallback tokens stay raw
    /// bytes, and the start-of-text effects (Metaspace's first token, Strip after Fuse) are left out.
    func decodeChain(_ tokens: [[UInt8]], stream: Bool, fused: inout Bool) -> [[UInt8]] {
        switch self {
        case .sequence(let list):
            var t = tokens
            for d in list { t = d.decodeChain(t, stream: stream, fused: &fused) }
            return t
        case .replace(let pattern, let content):
            return tokens.map { token in
                var piece = HFPiece(Array(String(decoding: token, as: UTF8.self).unicodeScalars), originZero: 0)
                piece.replace(pattern.matches(piece.scalars), with: content)
                return Array(String(String.UnicodeScalarView(piece.scalars)).utf8)
            }
        case .byteFallback:
            var out: [[UInt8]] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if stream {
                    out.append(pending)
                } else if Self.isValidUTF8(pending) {
                    out.append(pending)
                } else {
                    for _ in pending { out.append(Array("\u{FFFD}".utf8)) }
                }
                pending.removeAll()
            }
            for token in tokens {
                if let b = Self.fallbackByte(token) {
                    pending.append(b)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out
        case .fuse:
            fused = true
            return [tokens.flatMap { $0 }]
        case .strip(let content, let start, let stop):
            if stream && fused { return tokens }
            return tokens.map { token in
                let chars = Array(String(decoding: token, as: UTF8.self).unicodeScalars)
                var startCut = 0
                for i in 0..<min(start, chars.count) {
                    if chars[i] == content { startCut = i + 1 } else { break }
                }
                var stopCut = chars.count
                if stop > 0 {
                    for i in 0..<min(stop, chars.count) {
                        let index = chars.count - i - 1
                        if chars[index] == content { stopCut = index } else { break }
                    }
                }
                if startCut >= stopCut { return [] }
                return Array(String(String.UnicodeScalarView(chars[startCut..<stopCut])).utf8)
            }
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                if let b = HFByteLevel.bytes(of: token) { bytes += b } else { bytes += token }
            }
            if stream { return [bytes] }
            return [Array(String(decoding: bytes, as: UTF8.self).utf8)]
        case .metaspace(let replacement, let scheme):
            var rep: [UInt8] = []
            rep.append(contentsOf: String(replacement).utf8)
            return tokens.enumerated().map { i, token in
                let dropFirst = !stream && i == 0 && scheme != .never
                var out: [UInt8] = []
                out.reserveCapacity(token.count)
                for s in String(decoding: token, as: UTF8.self).unicodeScalars {
                    if s == replacement {
                        if !dropFirst { out.append(0x20) }
                    } else {
                        out.append(contentsOf: String(s).utf8)
                    }
                }
                return out
            }
        }
    }

    private static func isValidUTF8(_ bytes: [UInt8]) -> Bool {
        var it = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&it) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    /// The byte of a `<0xXX>` token.
    static func fallbackByte(_ token: [UInt8]) -> UInt8? {
        guard token.count == 6, token[0] == 0x3C, token[1] == 0x30, token[2] == 0x78, token[5] == 0x3E else { return nil }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        guard let h = hex(token[3]), let l = hex(token[4]) else { return nil }
        return h << 4 | l
    }
}
