/// Trains a SentencePiece-style BPE vocabulary with byte fallback, laid out as LLaMA2's so that
/// `Tokenizer` encodes with it and llama2.c's `tokenizer.bin` stores it.
///
/// The corpus is read line by line (a line is a sentence; empty lines are skipped). Each line is
/// normalized as `Tokenizer.encode` does it (a dummy-prefix space, spaces kept as they are) and cut
/// into words at every space: a word is one space followed by the non-space characters up to the
/// next space (`" the"`, SentencePiece's `▁the`), so merges never cross words and only a word's
/// leading space can be inside a piece. Words are counted once; merges run on that table.
///
/// Characters are kept, most frequent first, until they cover `characterCoverage` of the corpus's
/// characters; the rest fall back to byte pieces and never merge. Then, until the vocabulary is full,
/// the most frequent adjacent pair of pieces becomes a new piece (ties: the pair whose left piece, then
/// right piece, has the smaller internal id; characters are numbered by frequency, then by their
/// bytes, merged pieces after them in creation order), so the same corpus and settings give the same
/// vocabulary on any machine. Pair counts are updated incrementally (only the words holding the
/// merged pair are re-segmented) and the best pair comes from a lazy max-heap.
///
/// Each word's segmentation is kept equal to what `Tokenizer.encode` gives with the vocabulary built
/// so far: the encoder merges any split of a piece into two pieces, by score, so after a new piece is
/// added every split of it is applied, followed by any merge into an older piece that it enables.
/// Hence encoding a training word with the trained tokenizer reproduces the trainer's segmentation,
/// and the pair counts are exactly those of the encoder's output.
///
/// Layout: id 0 `<unk>` (unknown), 1 `<s>` and 2 `</s>` (control), 3...258 `<0x00>`...`<0xFF>`
/// (byte), then the merged pieces in creation order with score `-rank` (the first merge scores 0),
/// then the kept characters by frequency with scores below every merge, as SentencePiece writes it.
/// The vocabulary has `vocabSize` pieces unless the corpus runs out of pairs to merge first (every
/// word is a single piece, or the remaining pairs would exceed `maxPieceLength`); then it is shorter
/// and `Training.ranOutOfPairs` says so.
public struct BPETrainer: Sendable {
    /// What to train.
    public struct Settings: Sendable, Equatable {
        /// Pieces in the trained vocabulary, the 259 reserved ones included.
        public var vocabSize: Int
        /// Fraction of the corpus's characters (counted with repetition) that must have a piece of
        /// their own; rarer characters are left to byte fallback. 1 keeps every character.
        public var characterCoverage: Double
        /// Longest merged piece, in Unicode scalars (the leading space counts).
        public var maxPieceLength: Int

        /// Settings with SentencePiece's default coverage and piece length.
        public init(vocabSize: Int, characterCoverage: Double = 0.9995, maxPieceLength: Int = 16) {
            self.vocabSize = vocabSize
            self.characterCoverage = characterCoverage
            self.maxPieceLength = maxPieceLength
        }

        /// Refuses settings that cannot give a vocabulary, naming the field.
        public func validate() throws {
            let least = BPETrainer.reservedPieceCount + 1
            guard vocabSize >= least else {
                throw LlamaError.invalidConfig(field: "vocab_size",
                    reason: "\(vocabSize) is smaller than \(least): \(BPETrainer.reservedPieceCount) pieces are reserved (<unk>, <s>, </s> and 256 bytes) and at least one character is needed")
            }
            guard vocabSize <= BPETrainer.maxVocabSize else {
                throw LlamaError.invalidConfig(field: "vocab_size",
                    reason: "\(vocabSize) is larger than \(BPETrainer.maxVocabSize) (scores must stay exact in float32)")
            }
            guard characterCoverage > 0, characterCoverage <= 1 else {
                throw LlamaError.invalidConfig(field: "character_coverage",
                    reason: "\(characterCoverage) is not in (0, 1]")
            }
            guard maxPieceLength >= 1 else {
                throw LlamaError.invalidConfig(field: "max_piece_length", reason: "\(maxPieceLength) is less than 1")
            }
        }
    }

    /// A distinct training word with its count and final segmentation.
    public struct Word: Sendable, Equatable {
        /// The word with its leading space, e.g. `" the"` (a lone `" "` stands for an extra space).
        public let text: String
        /// How often it occurs in the corpus.
        public let count: Int
        /// Its pieces in the trained vocabulary (byte pieces for characters left to byte fallback).
        public let ids: [Int32]
    }

    /// A trained vocabulary with figures about the run.
    public struct Training: Sendable {
        /// The trained tokenizer.
        public let tokenizer: Tokenizer
        /// Merged pieces in the vocabulary.
        public let mergeCount: Int
        /// Characters that have a piece of their own.
        public let characterCount: Int
        /// Distinct characters of the corpus left to byte fallback by the coverage.
        public let fallbackCharacterCount: Int
        /// Whether merging stopped before `vocabSize` because no pair was left to merge.
        public let ranOutOfPairs: Bool
        /// UTF-8 bytes of the corpus.
        public let corpusBytes: Int
        /// Non-empty lines of the corpus.
        public let lineCount: Int
        /// Words in the corpus (with repetition; lone extra spaces are not words).
        public let wordCount: Int
        /// Tokens `tokenizer` gives for the corpus, line by line, without BOS/EOS.
        public let tokenCount: Int
        /// Distinct words, ordered by their bytes.
        public let words: [Word]

        /// Compression on the training corpus.
        public var tokensPerWord: Double { wordCount == 0 ? 0 : Double(tokenCount) / Double(wordCount) }
    }

    /// `<unk>`, `<s>`, `</s>` and the 256 byte pieces.
    public static let reservedPieceCount = 259
    /// Largest vocabulary: scores `-rank` stay exact in float32.
    public static let maxVocabSize = 1 << 24

    /// The settings this trainer uses.
    public let settings: Settings

    /// A trainer; refuses invalid settings.
    public init(settings: Settings) throws {
        try settings.validate()
        self.settings = settings
    }

    /// Trains on `corpus` (one sentence per line) and returns the tokenizer.
    public func train(corpus: String) throws -> Tokenizer {
        try training(corpus: corpus).tokenizer
    }

    /// Trains on `lines` (each a sentence; line breaks inside one also separate sentences).
    public func train(lines: [String]) throws -> Tokenizer {
        try training(corpus: lines.joined(separator: "\n")).tokenizer
    }

    /// Trains on `corpus` (one sentence per line) and returns the tokenizer with the run's figures.
    public func training(corpus: String) throws -> Training {
        var core = TrainerCore(bytes: Array(corpus.utf8), settings: settings)
        return try core.run()
    }
}

// MARK: - Implementation

/// The trainer's mutable state; one per run.
private struct TrainerCore {
    static let space = UInt8(ascii: " ")

    let corpus: [UInt8]
    let settings: BPETrainer.Settings

    // Pieces by internal id: characters first (0..<characterCount), then merges in creation order.
    var pieceBytes: [[UInt8]] = []
    var pieceLength: [Int] = []          // Unicode scalars
    var pieceRank: [Int32] = []          // merge rank; Int32.max for characters
    var pieceByBytes: [[UInt8]: Int32] = [:]
    /// Proper prefixes / suffixes (at scalar boundaries) of merged pieces -> those pieces.
    var byPrefix: [[UInt8]: [Int32]] = [:]
    var bySuffix: [[UInt8]: [Int32]] = [:]
    /// Every split of a piece into two pieces -> the piece (what `Tokenizer` merges).
    var merges: [UInt64: Int32] = [:]
    var characterCount = 0

    // Words: segmentation (internal ids, -1 for a byte-fallback character) and count.
    var wordBytes: [ArraySlice<UInt8>] = []   // without the leading space
    var symbols: [[Int32]] = []
    var counts: [Int] = []

    var pairCounts: [UInt64: Int] = [:]
    /// Words that held a pair at some point (may be stale; re-checked when used).
    var pairWords: [UInt64: [Int32]] = [:]
    var heap = PairHeap()
    // Scratch space of `resegment`.
    var freshScratch: [Bool] = []
    var eventScratch: [(key: UInt64, delta: Int)] = []

    init(bytes: [UInt8], settings: BPETrainer.Settings) {
        self.corpus = bytes
        self.settings = settings
    }

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
    @inline(__always) static func scalarLength(_ lead: UInt8) -> Int { lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4 }

    /// A character's bytes folded into one number; numeric order is byte order for valid UTF-8.
    @inline(__always) static func fold(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var v: UInt32 = 0
        for b in bytes { v = v << 8 | UInt32(b) }
        return v
    }

    static func unfold(_ v: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        var x = v
        repeat { out.insert(UInt8(x & 0xFF), at: 0); x >>= 8 } while x != 0
        return out
    }

    mutating func run() throws -> BPETrainer.Training {
        try settings.validate()

        // 1. Words and their counts, line by line.
        var wordCounts: [ArraySlice<UInt8>: Int] = [:]
        var lineCount = 0
        var lineStart = 0
        while lineStart <= corpus.count {
            var lineEnd = lineStart
            while lineEnd < corpus.count && corpus[lineEnd] != 0x0A { lineEnd += 1 }
            var end = lineEnd
            if end > lineStart && corpus[end - 1] == 0x0D { end -= 1 }
            if end > lineStart {
                lineCount += 1
                var runStart = lineStart
                for i in lineStart..<end where corpus[i] == TrainerCore.space {
                    wordCounts[corpus[runStart..<i], default: 0] += 1
                    runStart = i + 1
                }
                wordCounts[corpus[runStart..<end], default: 0] += 1
            }
            lineStart = lineEnd + 1
        }
        guard lineCount > 0 else {
            throw LlamaError.invalidInput("the corpus is empty: it has no non-empty line to train on")
        }
        wordBytes = wordCounts.keys.sorted { $0.lexicographicallyPrecedes($1) }
        counts = wordBytes.map { wordCounts[$0]! }
        wordCounts = [:]

        // 2. Characters, most frequent first, until they cover the corpus.
        var characterCounts: [UInt32: Int] = [:]
        for (w, word) in wordBytes.enumerated() {
            let c = counts[w]
            characterCounts[UInt32(TrainerCore.space), default: 0] += c
            var i = word.startIndex
            while i < word.endIndex {
                let end = min(i + TrainerCore.scalarLength(word[i]), word.endIndex)
                characterCounts[TrainerCore.fold(word[i..<end]), default: 0] += c
                i = end
            }
        }
        let ordered = characterCounts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        let total = ordered.reduce(0) { $0 + $1.value }
        var covered = 0
        var characterIds: [UInt32: Int32] = [:]
        for (character, count) in ordered {
            if Double(covered) / Double(total) >= settings.characterCoverage { break }
            covered += count
            let bytes = TrainerCore.unfold(character)
            characterIds[character] = Int32(pieceBytes.count)
            pieceByBytes[bytes] = Int32(pieceBytes.count)
            pieceBytes.append(bytes)
            pieceLength.append(1)
            pieceRank.append(Int32.max)
        }
        characterCount = pieceBytes.count
        let needed = BPETrainer.reservedPieceCount + characterCount
        guard settings.vocabSize >= needed else {
            throw LlamaError.invalidConfig(field: "vocab_size",
                reason: "\(settings.vocabSize) is smaller than the \(needed) pieces needed: \(BPETrainer.reservedPieceCount) reserved (<unk>, <s>, </s>, 256 bytes) plus the \(characterCount) characters covering \(settings.characterCoverage) of the corpus (lower the character coverage or raise the vocab size)")
        }

        // 3. Initial segmentation: one symbol per character; pair counts.
        symbols.reserveCapacity(wordBytes.count)
        let spaceId = characterIds[UInt32(TrainerCore.space)] ?? -1
        for word in wordBytes {
            var s: [Int32] = [spaceId]
            var i = word.startIndex
            while i < word.endIndex {
                let end = min(i + TrainerCore.scalarLength(word[i]), word.endIndex)
                s.append(characterIds[TrainerCore.fold(word[i..<end])] ?? -1)
                i = end
            }
            symbols.append(s)
        }
        var keys: [UInt64] = []
        for w in 0..<symbols.count {
            TrainerCore.pairKeys(symbols[w], into: &keys)
            var previous: UInt64? = nil
            for k in keys {
                pairCounts[k, default: 0] += counts[w]
                if k != previous { pairWords[k, default: []].append(Int32(w)) }
                previous = k
            }
        }
        for (k, c) in pairCounts { heap.push(PairHeap.Entry(count: c, key: k)) }

        // 4. Merges.
        let wanted = settings.vocabSize - needed
        var mergeCount = 0
        var stamp = [Int](repeating: -1, count: symbols.count)
        var increased: [UInt64] = []
        // By piece x: the newest piece whose pair (newest, x) / (x, newest) was last pushed.
        var withNewLeft: [Int32] = [], withNewRight: [Int32] = []
        while mergeCount < wanted, let top = heap.pop() {
            let current = pairCounts[top.key] ?? 0
            if current != top.count {
                // Stale: a lower current count goes back in; a higher one has its own entry.
                if current > 0 && current < top.count { heap.push(PairHeap.Entry(count: current, key: top.key)) }
                continue
            }
            let left = Int32(truncatingIfNeeded: top.key >> 32), right = Int32(truncatingIfNeeded: top.key)
            guard pieceLength[Int(left)] + pieceLength[Int(right)] <= settings.maxPieceLength else { continue }
            let bytes = pieceBytes[Int(left)] + pieceBytes[Int(right)]
            guard !TrainerCore.isReserved(bytes), pieceByBytes[bytes] == nil else { continue }

            let id = addPiece(bytes, length: pieceLength[Int(left)] + pieceLength[Int(right)], rank: Int32(mergeCount))
            mergeCount += 1

            // Every pair that now merges into the new piece, and the words holding one.
            var splitKeys: [UInt64] = []
            forEachSplit(bytes) { a, b in splitKeys.append(TrainerCore.key(a, b)) }
            increased.removeAll(keepingCapacity: true)
            for k in splitKeys {
                guard let list = pairWords[k] else { continue }
                for w in list where stamp[Int(w)] != Int(id) {
                    stamp[Int(w)] = Int(id)
                    resegment(Int(w), newest: id, splitKeys: splitKeys, increased: &increased)
                }
            }
            for k in splitKeys { pairWords[k] = nil }
            // Push each pair whose count grew once. Nearly all hold the new piece: those are told
            // apart by their other half; the rest (after merges into older pieces) are sorted.
            var others: [UInt64] = []
            while withNewLeft.count < pieceBytes.count { withNewLeft.append(-1); withNewRight.append(-1) }
            for k in increased {
                let a = Int32(truncatingIfNeeded: k >> 32), b = Int32(truncatingIfNeeded: k)
                if a == id {
                    if withNewLeft[Int(b)] == id { continue }
                    withNewLeft[Int(b)] = id
                } else if b == id {
                    if withNewRight[Int(a)] == id { continue }
                    withNewRight[Int(a)] = id
                } else {
                    others.append(k)
                    continue
                }
                if let c = pairCounts[k] { heap.push(PairHeap.Entry(count: c, key: k)) }
            }
            others.sort()
            var previous: UInt64? = nil
            for k in others where k != previous {
                previous = k
                if let c = pairCounts[k] { heap.push(PairHeap.Entry(count: c, key: k)) }
            }
        }
        let ranOut = mergeCount < wanted

        // 5. The vocabulary: specials, bytes, merges by rank, characters by frequency.
        var pieces: [[UInt8]] = [Array("<unk>".utf8), Array("<s>".utf8), Array("</s>".utf8)]
        var scores: [Float] = [0, 0, 0]
        var kinds: [Tokenizer.PieceKind] = [.unknown, .control, .control]
        let hex = Array("0123456789ABCDEF".utf8)
        for b in 0..<256 {
            pieces.append(Array("<0x".utf8) + [hex[b >> 4], hex[b & 15], UInt8(ascii: ">")])
            scores.append(0)
            kinds.append(.byte)
        }
        for r in 0..<mergeCount {
            pieces.append(pieceBytes[characterCount + r])
            scores.append(-Float(r))
            kinds.append(.normal)
        }
        for c in 0..<characterCount {
            pieces.append(pieceBytes[c])
            scores.append(-Float(mergeCount + c))
            kinds.append(.normal)
        }
        let tokenizer = Tokenizer(pieces: pieces, scores: scores, kinds: kinds)

        // 6. Final segmentations in vocabulary ids.
        func finalId(_ piece: Int32) -> Int32 {
            Int(piece) < characterCount
                ? Int32(BPETrainer.reservedPieceCount + mergeCount) + piece
                : Int32(BPETrainer.reservedPieceCount) + piece - Int32(characterCount)
        }
        var words: [BPETrainer.Word] = []
        words.reserveCapacity(symbols.count)
        var tokenCount = 0, wordCount = 0
        for w in 0..<symbols.count {
            let unit = [TrainerCore.space] + wordBytes[w]
            var ids: [Int32] = []
            var at = 0
            for s in symbols[w] {
                if s >= 0 {
                    ids.append(finalId(s))
                    at += pieceBytes[Int(s)].count
                } else {
                    let end = min(at + TrainerCore.scalarLength(unit[at]), unit.count)
                    for b in unit[at..<end] { ids.append(Int32(3) + Int32(b)) }
                    at = end
                }
            }
            tokenCount += ids.count * counts[w]
            if !wordBytes[w].isEmpty { wordCount += counts[w] }
            words.append(BPETrainer.Word(text: String(decoding: unit, as: UTF8.self), count: counts[w], ids: ids))
        }
        return BPETrainer.Training(
            tokenizer: tokenizer, mergeCount: mergeCount, characterCount: characterCount,
            fallbackCharacterCount: characterCounts.count - characterCount, ranOutOfPairs: ranOut,
            corpusBytes: corpus.count, lineCount: lineCount, wordCount: wordCount, tokenCount: tokenCount,
            words: words)
    }

    /// Pieces `Tokenizer.fromLlama2c` would not read back as normal pieces.
    static func isReserved(_ bytes: [UInt8]) -> Bool {
        if Tokenizer.byteValue(bytes) != nil { return true }
        switch bytes {
        case Array("<unk>".utf8), Array("<s>".utf8), Array("</s>".utf8),
             Array("\n<s>\n".utf8), Array("\n</s>\n".utf8): return true
        default: return false
        }
    }

    /// Byte offsets of the inner scalar boundaries of `bytes`.
    static func cuts(_ bytes: [UInt8]) -> [Int] {
        var out: [Int] = []
        var i = scalarLength(bytes[0])
        while i < bytes.count {
            out.append(i)
            i += scalarLength(bytes[i])
        }
        return out
    }

    /// Calls `body(left, right)` for every split of `bytes` into two existing pieces.
    func forEachSplit(_ bytes: [UInt8], _ body: (Int32, Int32) -> Void) {
        for cut in TrainerCore.cuts(bytes) {
            if let a = pieceByBytes[Array(bytes[..<cut])], let b = pieceByBytes[Array(bytes[cut...])] { body(a, b) }
        }
    }

    /// Adds a merged piece and every merge it takes part in (as the result or as one half).
    mutating func addPiece(_ bytes: [UInt8], length: Int, rank: Int32) -> Int32 {
        let id = Int32(pieceBytes.count)
        pieceBytes.append(bytes)
        pieceLength.append(length)
        pieceRank.append(rank)
        pieceByBytes[bytes] = id
        var found: [(UInt64, Int32)] = []
        forEachSplit(bytes) { a, b in found.append((TrainerCore.key(a, b), id)) }
        // Older pieces that split into this one and another piece.
        for q in byPrefix[bytes] ?? [] {
            let whole = pieceBytes[Int(q)]
            if let other = pieceByBytes[Array(whole[bytes.count...])] { found.append((TrainerCore.key(id, other), q)) }
        }
        for q in bySuffix[bytes] ?? [] {
            let whole = pieceBytes[Int(q)]
            if let other = pieceByBytes[Array(whole[..<(whole.count - bytes.count)])] { found.append((TrainerCore.key(other, id), q)) }
        }
        for (k, piece) in found where merges[k] == nil { merges[k] = piece }
        for cut in TrainerCore.cuts(bytes) {
            byPrefix[Array(bytes[..<cut]), default: []].append(id)
            bySuffix[Array(bytes[cut...]), default: []].append(id)
        }
        return id
    }

    /// Sorted keys of the adjacent mergeable pairs of `s` (with repetition).
    static func pairKeys(_ s: [Int32], into keys: inout [UInt64]) {
        keys.removeAll(keepingCapacity: true)
        guard s.count > 1 else { return }
        for j in 0..<(s.count - 1) where s[j] >= 0 && s[j + 1] >= 0 {
            keys.append(TrainerCore.key(s[j], s[j + 1]))
        }
        if keys.count > 24 {
            keys.sort()
            return
        }
        // Words are short: insertion sort beats the general sort here.
        for i in 1..<max(keys.count, 1) {
            let k = keys[i]
            var j = i
            while j > 0 && keys[j - 1] > k {
                keys[j] = keys[j - 1]
                j -= 1
            }
            keys[j] = k
        }
    }

    /// Brings word `w` to what the encoder gives with the current vocabulary and updates the pair
    /// counts. The word held the encoder's output for the vocabulary before `newest`, so no adjacent
    /// pair of it merged then: the merges now possible are the splits of `newest` (`splitKeys`), and
    /// then pairs with a symbol made here (a merge into an older piece that `newest` enables). As in
    /// the encoder, the highest-priority (lowest-rank) merge goes first, the leftmost on a tie.
    mutating func resegment(_ w: Int, newest: Int32, splitKeys: [UInt64], increased: inout [UInt64]) {
        var s = symbols[w]
        guard s.count > 1 else { return }
        var fresh = freshScratch
        freshScratch = []
        var events = eventScratch
        eventScratch = []
        defer {
            freshScratch = fresh
            eventScratch = events
        }
        fresh.removeAll(keepingCapacity: true)
        fresh.append(contentsOf: repeatElement(false, count: s.count))
        events.removeAll(keepingCapacity: true)
        while s.count > 1 {
            var best = -1, bestRank = Int32.max, bestPiece: Int32 = -1
            for j in 0..<(s.count - 1) {
                let a = s[j], b = s[j + 1]
                guard a >= 0 && b >= 0 else { continue }
                let k = TrainerCore.key(a, b)
                let m: Int32
                if fresh[j] || fresh[j + 1] {
                    m = merges[k] ?? -1
                } else {
                    m = splitKeys.contains(k) ? newest : -1
                }
                if m >= 0 && pieceRank[Int(m)] < bestRank {
                    best = j
                    bestRank = pieceRank[Int(m)]
                    bestPiece = m
                }
            }
            if best < 0 { break }
            // The pairs this merge removes and adds.
            let a = s[best], b = s[best + 1]
            events.append((TrainerCore.key(a, b), -1))
            if best > 0 && s[best - 1] >= 0 {
                events.append((TrainerCore.key(s[best - 1], a), -1))
                events.append((TrainerCore.key(s[best - 1], bestPiece), 1))
            }
            if best + 2 < s.count && s[best + 2] >= 0 {
                events.append((TrainerCore.key(b, s[best + 2]), -1))
                events.append((TrainerCore.key(bestPiece, s[best + 2]), 1))
            }
            s[best] = bestPiece
            s.remove(at: best + 1)
            fresh[best] = true
            fresh.remove(at: best + 1)
        }
        guard !events.isEmpty else { return }
        symbols[w] = s
        // Net change per pair (few events: insertion sort).
        for i in 1..<events.count {
            let e = events[i]
            var j = i
            while j > 0 && events[j - 1].key > e.key {
                events[j] = events[j - 1]
                j -= 1
            }
            events[j] = e
        }
        let c = counts[w]
        var i = 0
        while i < events.count {
            let k = events[i].key
            var delta = 0
            while i < events.count && events[i].key == k { delta += events[i].delta; i += 1 }
            guard delta != 0 else { continue }
            let updated = (pairCounts[k] ?? 0) + delta * c
            pairCounts[k] = updated == 0 ? nil : updated
            if delta > 0 {
                increased.append(k)
                pairWords[k, default: []].append(Int32(w))
            }
        }
    }
}

/// A max-heap of pair counts: higher count first, then the smaller key (left id, then right id).
private struct PairHeap {
    struct Entry {
        let count: Int
        let key: UInt64

        @inline(__always) func precedes(_ other: Entry) -> Bool {
            count != other.count ? count > other.count : key < other.key
        }
    }

    private var items: [Entry] = []

    mutating func push(_ e: Entry) {
        items.append(e)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let l = 2 * parent + 1, r = l + 1
                var best = parent
                if l < items.count && items[l].precedes(items[best]) { best = l }
                if r < items.count && items[r].precedes(items[best]) { best = r }
                if best == parent { break }
                items.swapAt(parent, best)
                parent = best
            }
        }
        return top
    }
}
