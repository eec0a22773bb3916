import Foundation

extension Tokenizer {
    /// Loads `path`: a Hugging Face model directory (its tokenizer.json or tokenizer.model, special
    /// tokens and chat format), a Hugging Face `tokenizer.json` (`.json`), SentencePiece's
    /// `ModelProto` (`.model`) or llama2.c's format (`.bin`). Any other name is told apart by content:
    /// a ModelProto starts with field 1 (byte 0x0A); if it does not parse as one, the llama2.c
    /// reading is tried.
    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            self = try Tokenizer.fromHuggingFace(directory: path)
            return
        }
        if path.hasSuffix(".json") {
            self = try Tokenizer.fromHuggingFace(json: path)
            return
        }
        let file = try ReadableFile(path: path)
        defer { file.close() }
        let bytes = try file.readAll()
        if path.hasSuffix(".model") {
            self = try Tokenizer.fromSentencePiece(bytes, path: path)
        } else if path.hasSuffix(".bin") || bytes.first != 0x0A {
            self = try Tokenizer.fromLlama2c(bytes, path: path)
        } else if let model = try? Tokenizer.fromSentencePiece(bytes, path: path) {
            self = model
        } else {
            self = try Tokenizer.fromLlama2c(bytes, path: path)
        }
    }

    /// Parses llama2.c's format: uint32 max_token_length, then per piece float32 score, int32 byte
    /// length and the bytes. Pieces have SentencePiece's `▁` already turned into spaces.
    public static func fromLlama2c(_ bytes: [UInt8], path: String) throws -> Tokenizer {
        func u32(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
        }
        guard bytes.count >= 4 else {
            throw LlamaError.invalidTokenizer(path: path, reason: "file is \(bytes.count) bytes, too short for its header")
        }
        let maxLength = Int(u32(0))
        var pieces: [[UInt8]] = [], scores: [Float] = [], kinds: [PieceKind] = []
        var at = 4
        while at < bytes.count {
            guard at + 8 <= bytes.count else {
                throw LlamaError.invalidTokenizer(path: path,
                    reason: "truncated in the header of piece \(pieces.count) at byte \(at) of \(bytes.count)")
            }
            let score = Float(bitPattern: u32(at))
            let length = Int(Int32(bitPattern: u32(at + 4)))
            at += 8
            guard length >= 0, length <= max(maxLength, 64), at + length <= bytes.count else {
                throw LlamaError.invalidTokenizer(path: path,
                    reason: "piece \(pieces.count) claims \(length) bytes at byte \(at), but the file has \(bytes.count - at) left (max_token_length \(maxLength))")
            }
            let piece = Array(bytes[at ..< at + length])
            at += length
            pieces.append(piece)
            scores.append(score)
            kinds.append(llama2cKind(piece))
        }
        guard !pieces.isEmpty else { throw LlamaError.invalidTokenizer(path: path, reason: "no pieces") }
        func find(_ names: [String], default d: Int32) -> Int32 {
            for name in names { if let i = pieces.firstIndex(of: Array(name.utf8)) { return Int32(i) } }
            return d
        }
        return Tokenizer(pieces: pieces, scores: scores, kinds: kinds,
                         bosId: find(["\n<s>\n", "<s>"], default: 1), eosId: find(["\n</s>\n", "</s>"], default: 2),
                         unknownId: find(["<unk>"], default: 0))
    }

    /// This vocabulary in llama2.c's `tokenizer.bin` format, as `fromLlama2c` reads it: uint32
    /// max_token_length (the longest piece in bytes), then per piece float32 score, int32 byte length and
    /// the bytes, all little-endian. Pieces are written as held, spaces as spaces (not `▁`). Kinds are
    /// not stored: the reader infers them from the text (`<unk>`, `<s>`, `</s>`, `<0xXX>`, else normal),
    /// and neither are the normalizer flags (read back: dummy prefix on, extra whitespace kept).
    public func llama2cBytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4 + pieces.reduce(0) { $0 + 8 + $1.count })
        func u32(_ v: UInt32) {
            out.append(UInt8(truncatingIfNeeded: v))
            out.append(UInt8(truncatingIfNeeded: v >> 8))
            out.append(UInt8(truncatingIfNeeded: v >> 16))
            out.append(UInt8(truncatingIfNeeded: v >> 24))
        }
        u32(UInt32(pieces.map(\.count).max() ?? 0))
        for (piece, score) in zip(pieces, scores) {
            u32(score.bitPattern)
            u32(UInt32(piece.count))
            out += piece
        }
        return out
    }

    /// Writes `llama2cBytes()` to `path` atomically (temporary file, fsync, rename).
    public func write(llama2cPath path: String) throws {
        let file = try WritableFile(atomicPath: path)
        do {
            try file.write(llama2cBytes())
            try file.commit()
        } catch {
            file.abandon()
            throw error
        }
    }

    private static func llama2cKind(_ piece: [UInt8]) -> PieceKind {
        if byteValue(piece) != nil { return .byte }
        switch String(decoding: piece, as: UTF8.self) {
        case "<unk>": return .unknown
        case "<s>", "</s>", "\n<s>\n", "\n</s>\n": return .control
        default: return .normal
        }
    }

    /// Parses SentencePiece's `ModelProto`: pieces (field 1), trainer spec (field 2: model type, special
    /// ids) and normalizer spec (field 3: dummy prefix, whitespace handling). Only BPE models are accepted.
    public static func fromSentencePiece(_ bytes: [UInt8], path: String) throws -> Tokenizer {
        var pieces: [[UInt8]] = [], scores: [Float] = [], kinds: [PieceKind] = []
        var modelType: UInt64 = 1
        var unk: Int32 = 0, bos: Int32 = 1, eos: Int32 = 2
        var dummyPrefix = true, removeWhitespace = true, normalizerName = ""
        let space = Array("\u{2581}".utf8)
        do {
            var reader = ProtobufReader(bytes[...])
            while let (number, value) = try reader.nextField() {
                switch (number, value) {
                case (1, .bytes(let message)):
                    var piece: [UInt8] = [], score: Float = 0, kind = PieceKind.normal
                    var sub = ProtobufReader(message)
                    while let (n, v) = try sub.nextField() {
                        switch (n, v) {
                        case (1, .bytes(let text)): piece = Array(text)
                        case (2, .fixed32(let bits)): score = Float(bitPattern: bits)
                        case (3, .varint(let t)): kind = Int(exactly: t).flatMap(PieceKind.init(rawValue:)) ?? .normal
                        default: break
                        }
                    }
                    pieces.append(replace(space, with: UInt8(ascii: " "), in: piece))
                    scores.append(score)
                    kinds.append(kind)
                case (2, .bytes(let message)):
                    var sub = ProtobufReader(message)
                    while let (n, v) = try sub.nextField() {
                        guard case let .varint(x) = v else { continue }
                        switch n {
                        case 3: modelType = x
                        case 40: unk = Int32(truncatingIfNeeded: x)
                        case 41: bos = Int32(truncatingIfNeeded: x)
                        case 42: eos = Int32(truncatingIfNeeded: x)
                        default: break
                        }
                    }
                case (3, .bytes(let message)):
                    var sub = ProtobufReader(message)
                    while let (n, v) = try sub.nextField() {
                        switch (n, v) {
                        case (1, .bytes(let name)): normalizerName = String(decoding: name, as: UTF8.self)
                        case (3, .varint(let x)): dummyPrefix = x != 0
                        case (4, .varint(let x)): removeWhitespace = x != 0
                        default: break
                        }
                    }
                default: break
                }
            }
        } catch {
            throw LlamaError.invalidTokenizer(path: path, reason: "not a SentencePiece model: \(error)")
        }
        guard modelType == 2 else {
            throw LlamaError.invalidTokenizer(path: path,
                reason: "model_type \(modelType) is not BPE (2); only BPE SentencePiece models are supported")
        }
        guard !pieces.isEmpty else { throw LlamaError.invalidTokenizer(path: path, reason: "no pieces") }
        for (name, id) in [("unk_id", unk), ("bos_id", bos), ("eos_id", eos)] where !(0 ..< Int32(clamping: pieces.count)).contains(id) {
            throw LlamaError.invalidTokenizer(path: path, reason: "\(name) \(id) is not one of the model's \(pieces.count) pieces "
                                              + "(this build needs unknown, BOS and EOS pieces)")
        }
        _ = normalizerName
        return Tokenizer(pieces: pieces, scores: scores, kinds: kinds, bosId: bos, eosId: eos, unknownId: unk,
                         addDummyPrefix: dummyPrefix, removeExtraWhitespaces: removeWhitespace)
    }

    private static func replace(_ pattern: [UInt8], with byte: UInt8, in piece: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(piece.count)
        var i = 0
        while i < piece.count {
            if i + pattern.count <= piece.count && Array(piece[i ..< i + pattern.count]) == pattern {
                out.append(byte)
                i += pattern.count
            } else {
                out.append(piece[i])
                i += 1
            }
        }
        return out
    }
}
