/// A model's tokenizer. LLaMA2's SentencePiece BPE from llama2.c's `tokenizer.bin` or SentencePiece's
/// `tokenizer.model`, encoded exactly as SentencePiece does (dummy prefix, merges by score with
/// leftmost tie-break, byte fallback) in O(n log n); or a Hugging Face `tokenizer.json`, encoded and
/// decoded exactly as the `tokenizers` library does (`HuggingFaceTokenizer`).
public struct Tokenizer: Sendable {
    /// What a vocabulary entry is.
    public enum PieceKind: Int, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// Piece bytes, whitespace as `' '` (SentencePiece's `▁` is converted on load).
    public let pieces: [[UInt8]]
    /// Merge priority of each piece (higher merges first).
    public let scores: [Float]
    /// Kind of each piece.
    public let kinds: [PieceKind]
    /// Begin-of-sequence id.
    public let bosId: Int32
    /// End-of-sequence id.
    public let eosId: Int32
    /// Unknown-piece id (used when a character has no piece and no byte fallback exists).
    public let unknownId: Int32
    /// Whether encoding prepends a space to non-empty text.
    public let addDummyPrefix: Bool
    /// Whether encoding trims and collapses runs of spaces first.
    public let removeExtraWhitespaces: Bool
    /// The chat format conversations are rendered in (`ChatTemplate`): LLaMA2's unless the model's
    /// template or the spec says otherwise.
    public var chatFormat: ChatFormat = .llama2 {
        // A format named in place of the model's own template replaces it.
        didSet { chatTemplate = nil }
    }
    /// The model's own chat template, rendering conversations where its source is none of
    /// `ChatFormat`'s (a Hugging Face directory's `chat_template`; nil otherwise).
    public internal(set) var chatTemplate: ModelChatTemplate? {
        didSet { updateStops() }
    }
    /// The ids a Hugging Face directory's `generation_config.json` (else `config.json`) names as
    /// `eos_token_id`: where `transformers`' `generate` stops (LLaMA 3.1's `<|eom_id|>` and
    /// `<|eot_id|>` beside `<|end_of_text|>`); empty for other tokenizers.
    public internal(set) var generationStopIds: [Int32] = [] {
        didSet { updateStops() }
    }
    /// The token an answer ends with in this model's chat format: the special token its own template
    /// writes right after an answer's text (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `</s>`...), ChatML's
    /// `<|im_end|>`, LLaMA 3's `<|eot_id|>`, else EOS. Answers made from text (preference pairs, samples
    /// cut at the length limit) end with it, as the model's own answers do.
    public private(set) var endOfTurnId: Int32
    /// The tokens that end a generated answer, `endOfTurnId` first: the end of turn, EOS, and
    /// `generationStopIds` (as `transformers`' `generate` and vLLM stop at any of them).
    public private(set) var stopIds: [Int32]
    /// Why the model's own chat template could not be used (unrecognised), if so: raised by
    /// `requireChatFormat()` where conversations are rendered.
    public internal(set) var chatTemplateError: LlamaError?
    /// The `tokenizer.json` pipeline, when the tokenizer came from one: encode and decode go through it.
    public internal(set) var huggingFace: HuggingFaceTokenizer?

    /// Mergeable pieces by their bytes (normal and user-defined pieces).
    private let pieceIds: [[UInt8]: Int32]
    /// `(left << 32 | right)` -> the piece both make together.
    private let merges: [UInt64: Int32]
    /// Id of `<0xXX>` for each byte, or -1.
    private let byteIds: [Int32]
    /// The special pieces a chat template's text may spell (control and user-defined pieces, BOS and
    /// EOS) with their ids, longest text first: what `encodeRendered` splits out.
    let specialPieces: [(text: String, id: Int32)]

    /// Number of pieces.
    public var vocabSize: Int { pieces.count }

    /// The first id whose token differs from `other`'s (or the first id one of them lacks); nil where
    /// both tokenizers have the same tokens under the same ids.
    public func firstDifference(from other: Tokenizer) -> Int32? {
        for id in 0..<Int32(min(vocabSize, other.vocabSize)) where tokenText(id) != other.tokenText(id) { return id }
        return vocabSize == other.vocabSize ? nil : Int32(min(vocabSize, other.vocabSize))
    }

    /// Builds a tokenizer from its vocabulary.
    public init(pieces: [[UInt8]], scores: [Float], kinds: [PieceKind], bosId: Int32 = 1, eosId: Int32 = 2,
                unknownId: Int32 = 0, addDummyPrefix: Bool = true, removeExtraWhitespaces: Bool = false) {
        precondition(pieces.count == scores.count && pieces.count == kinds.count)
        self.pieces = pieces
        self.scores = scores
        self.kinds = kinds
        self.bosId = bosId
        self.eosId = eosId
        endOfTurnId = eosId
        stopIds = [eosId]
        self.unknownId = unknownId
        self.addDummyPrefix = addDummyPrefix
        self.removeExtraWhitespaces = removeExtraWhitespaces
        var ids: [[UInt8]: Int32] = [:]
        var byteIds = [Int32](repeating: -1, count: 256)
        var specialIds: Set<Int32> = [bosId, eosId]
        for (i, piece) in pieces.enumerated() {
            if kinds[i] == .control || kinds[i] == .userDefined { specialIds.insert(Int32(i)) }
            switch kinds[i] {
            case .normal, .userDefined:
                if ids[piece] == nil { ids[piece] = Int32(i) }
            case .byte:
                if let b = Tokenizer.byteValue(piece) { byteIds[Int(b)] = Int32(i) }
            default: break
            }
        }
        // Every way of splitting a mergeable piece into two mergeable pieces is a merge.
        var merges: [UInt64: Int32] = [:]
        for (piece, id) in ids where piece.count > 1 {
            for cut in 1..<piece.count {
                if let left = ids[Array(piece[..<cut])], let right = ids[Array(piece[cut...])] {
                    merges[UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))] = id
                }
            }
        }
        pieceIds = ids
        self.merges = merges
        self.byteIds = byteIds
        specialPieces = specialIds.filter { $0 >= 0 && Int($0) < pieces.count && !pieces[Int($0)].isEmpty }
            .map { (String(decoding: pieces[Int($0)], as: UTF8.self), $0) }
            .sorted { $0.text.count != $1.text.count ? $0.text.count > $1.text.count : $0.id < $1.id }
    }

    /// Finds `endOfTurnId` and `stopIds` again after the chat format, template or generation stops changed.
    private mutating func updateStops() {
        endOfTurnId = chatTemplate.map { endOfTurn($0) ?? eosId } ?? chatFormat.endOfTurn(in: self)
        var ids: [Int32] = []
        for id in [endOfTurnId, eosId] + generationStopIds where !ids.contains(id) && id >= 0 && Int(id) < vocabSize { ids.append(id) }
        stopIds = ids
    }

    /// `<0xAB>` -> 0xAB.
    static func byteValue(_ piece: [UInt8]) -> UInt8? {
        guard piece.count == 6, piece[0] == UInt8(ascii: "<"), piece[1] == UInt8(ascii: "0"),
              piece[2] == UInt8(ascii: "x"), piece[5] == UInt8(ascii: ">") else { return nil }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        guard let hi = hex(piece[3]), let lo = hex(piece[4]) else { return nil }
        return hi << 4 | lo
    }

    /// Refuses a tokenizer whose vocabulary does not match a model's.
    /// A `tokenizer.json` may be shorter than the model's embedding (Hugging Face models pad
    /// `vocab_size`), never longer.
    public func check(against config: LlamaConfig, path: String = "tokenizer") throws {
        if vocabSize < config.vocabSize && huggingFace == nil {
            throw LlamaError.invalidTokenizer(path: path,
                reason: "has \(vocabSize) pieces, shorter than the model's vocab_size \(config.vocabSize)")
        }
        if vocabSize > config.vocabSize {
            throw LlamaError.invalidTokenizer(path: path,
                reason: "has \(vocabSize) pieces, more than the model's vocab_size \(config.vocabSize)")
        }
    }

    // MARK: - Encoding

    /// Encodes `text` (SentencePiece semantics), optionally with BOS first and EOS last.
    public func encode(_ text: String, bos: Bool = false, eos: Bool = false) -> [Int32] {
        var out: [Int32] = []
        if bos { out.append(bosId) }
        if let huggingFace {
            out += huggingFace.encode(text)
        } else {
            out += encodeBody(normalize(text))
        }
        if eos { out.append(eosId) }
        return out
    }

    /// Applies the normalizer: whitespace trimming and collapsing if configured, then the dummy prefix.
    private func normalize(_ text: String) -> [UInt8] {
        var bytes = Array(text.utf8)
        if removeExtraWhitespaces {
            var collapsed: [UInt8] = []
            collapsed.reserveCapacity(bytes.count)
            for b in bytes {
                if b == UInt8(ascii: " ") && (collapsed.isEmpty || collapsed.last == UInt8(ascii: " ")) { continue }
                collapsed.append(b)
            }
            while collapsed.last == UInt8(ascii: " ") { collapsed.removeLast() }
            bytes = collapsed
        }
        if bytes.isEmpty { return [] }
        if addDummyPrefix { bytes.insert(UInt8(ascii: " "), at: 0) }
        return bytes
    }

    /// A candidate merge of symbols `left` and its right neighbour into `merged`.
    private struct Candidate {
        let score: Float
        let left: Int32
        let leftId: Int32
        let rightId: Int32
        let merged: Int32

        /// Higher score first; on a tie, the leftmost pair (SentencePiece's order).
        @inline(__always)
        func precedes(_ other: Candidate) -> Bool {
            score != other.score ? score > other.score : left < other.left
        }
    }

    private func encodeBody(_ bytes: [UInt8]) -> [Int32] {
        guard !bytes.isEmpty else { return [] }
        // One symbol per Unicode scalar: its piece id, or -1 with its byte range for fallback.
        var ids: [Int32] = []
        var starts: [Int32] = []
        var ends: [Int32] = []
        ids.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let lead = bytes[i]
            let length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
            let end = min(i + length, bytes.count)
            ids.append(pieceIds[Array(bytes[i..<end])] ?? -1)
            starts.append(Int32(i))
            ends.append(Int32(end))
            i = end
        }
        let n = ids.count
        var next = (0..<n).map { Int32($0 + 1) }
        var prev = (0..<n).map { Int32($0 - 1) }
        next[n - 1] = -1

        var heap: [Candidate] = []
        heap.reserveCapacity(n)
        func push(_ c: Candidate) {
            heap.append(c)
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard heap[child].precedes(heap[parent]) else { break }
                heap.swapAt(child, parent)
                child = parent
            }
        }
        func pop() -> Candidate {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var parent = 0
                while true {
                    let l = 2 * parent + 1, r = l + 1
                    var best = parent
                    if l < heap.count && heap[l].precedes(heap[best]) { best = l }
                    if r < heap.count && heap[r].precedes(heap[best]) { best = r }
                    if best == parent { break }
                    heap.swapAt(parent, best)
                    parent = best
                }
            }
            return top
        }
        func consider(_ left: Int32) {
            guard left >= 0 else { return }
            let right = next[Int(left)]
            guard right >= 0 else { return }
            let a = ids[Int(left)], b = ids[Int(right)]
            guard a >= 0, b >= 0, let merged = merges[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] else { return }
            push(Candidate(score: scores[Int(merged)], left: left, leftId: a, rightId: b, merged: merged))
        }
        for s in 0..<(n - 1) { consider(Int32(s)) }
        while !heap.isEmpty {
            let c = pop()
            let left = Int(c.left)
            let right = next[left]
            // Skip candidates made stale by an earlier merge.
            guard ids[left] == c.leftId, right >= 0, ids[Int(right)] == c.rightId else { continue }
            ids[left] = c.merged
            ends[left] = ends[Int(right)]
            ids[Int(right)] = -2
            let after = next[Int(right)]
            next[left] = after
            if after >= 0 { prev[Int(after)] = Int32(left) }
            consider(prev[left])
            consider(Int32(left))
        }

        var out: [Int32] = []
        out.reserveCapacity(n)
        var s: Int32 = 0
        while s >= 0 {
            let id = ids[Int(s)]
            if id >= 0 {
                out.append(id)
            } else {
                for b in bytes[Int(starts[Int(s)])..<Int(ends[Int(s)])] {
                    let byteId = byteIds[Int(b)]
                    out.append(byteId >= 0 ? byteId : unknownId)
                }
            }
            s = next[Int(s)]
        }
        return out
    }

    /// The id of the piece whose text is `text` (special tokens such as `<s>` or `<|im_end|>`).
    public func tokenId(_ text: String) -> Int32? {
        if let huggingFace { return huggingFace.id(of: text) }
        let bytes = Array(text.utf8)
        return pieces.firstIndex(of: bytes).map { Int32($0) }
    }

    /// The text of piece `id` as the vocabulary spells it (`<s>` for BOS), empty outside the vocabulary.
    public func tokenText(_ id: Int32) -> String {
        if let huggingFace { return huggingFace.token(id) ?? "" }
        guard id >= 0, Int(id) < pieces.count else { return "" }
        return String(decoding: pieces[Int(id)], as: UTF8.self)
    }

    // MARK: - Decoding

    /// The bytes a piece stands for in decoded text (control pieces: none; bytes: the byte).
    public func bytes(of id: Int32) -> [UInt8] {
        if let huggingFace {
            guard id >= 0, Int(id) < pieces.count else { return Array("\u{FFFD}".utf8) }
            return huggingFace.bytes(of: id)
        }
        guard id >= 0, Int(id) < pieces.count else { return Array("\u{FFFD}".utf8) }
        switch kinds[Int(id)] {
        case .control, .unused: return []
        case .byte: return Tokenizer.byteValue(pieces[Int(id)]).map { [$0] } ?? []
        case .unknown: return Array(" \u{2047} ".utf8)
        case .normal, .userDefined: return pieces[Int(id)]
        }
    }

    /// Decodes ids as SentencePiece does: the dummy-prefix space of the first piece is removed, byte
    /// pieces are joined into UTF-8 (invalid sequences become U+FFFD), control pieces vanish.
    public func decode(_ ids: [Int32]) -> String {
        if let huggingFace { return huggingFace.decode(ids, skipSpecialTokens: true) }
        var output: [UInt8] = []
        var first = true
        for id in ids {
            var piece = bytes(of: id)
            if piece.isEmpty { continue }
            if first && addDummyPrefix && kinds[Int(id)] != .byte && piece.first == UInt8(ascii: " ") {
                piece.removeFirst()
            }
            first = false
            output += piece
        }
        return String(decoding: output, as: UTF8.self)
    }
}

/// Turns a stream of token ids into text as they arrive, holding back bytes of an incomplete UTF-8
/// character (byte-fallback pieces split characters across tokens).
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private var pending: [UInt8] = []
    private var first: Bool

    /// A decoder for a response; `atStart` strips the dummy-prefix space of the first piece.
    public init(tokenizer: Tokenizer, atStart: Bool = true) {
        self.tokenizer = tokenizer
        self.first = atStart
    }

    /// Appends one token and returns the text that is now complete.
    public mutating func append(_ id: Int32) -> String {
        var piece = tokenizer.bytes(of: id)
        if piece.isEmpty { return "" }
        if first && tokenizer.addDummyPrefix && piece.first == UInt8(ascii: " ")
            && Int(id) < tokenizer.kinds.count && tokenizer.kinds[Int(id)] != .byte {
            piece.removeFirst()
        }
        first = false
        pending += piece
        // Emit everything up to the last complete UTF-8 character.
        var cut = pending.count
        var back = 0
        while back < min(4, pending.count) {
            let b = pending[pending.count - 1 - back]
            if b & 0xC0 != 0x80 {
                let need = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                if need > back + 1 { cut = pending.count - 1 - back }
                break
            }
            back += 1
        }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is still held back (as replacement characters if incomplete).
    public mutating func finish() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }
}
