import Foundation

/// The `tokenizers` BPE model: merges applied by rank with a priority queue over a linked list of
/// symbols (`Word::merge_all`), byte fallback, unknown-token fusing, `ignore_merges`.
struct HFBPEModel: Sendable {
    /// Token (exact scalars: Swift `String` equality would merge canonically equivalent tokens) -> id.
    let vocab: [[Unicode.Scalar]: Int32]
    /// Ids of the single-scalar vocabulary entries (the fast path when there is no prefix/suffix).
    let scalarVocab: [UInt32: Int32]
    /// Token string of each id of the vocabulary.
    let vocabR: [Int32: String]
    /// (left id << 32 | right id) -> (rank << 32 | new id).
    let merges: [UInt64: UInt64]
    let unkId: Int32?
    let fuseUnk: Bool
    let byteFallback: Bool
    let byteIds: [Int32]?  // id of <0xXX> for each byte, when all 256 exist
    let ignoreMerges: Bool
    let continuingSubwordPrefix: [Unicode.Scalar]?
    let endOfWordSuffix: [Unicode.Scalar]?

    static func byteToken(_ b: UInt8) -> [Unicode.Scalar] {
        let hex = Array("0123456789ABCDEF".unicodeScalars)
        return ["<", "0", "x", hex[Int(b >> 4)], hex[Int(b & 15)], ">"]
    }

    init(json: HFJSON, path: String) throws {
        let type = json["type"]?.string
        guard type == "BPE" || (type == nil && json["merges"] != nil) else {
            throw LlamaError.invalidTokenizer(
                path: path, reason: "model type \"\(type ?? "<missing>")\" is not supported (supported: BPE)")
        }
        if let dropout = json["dropout"], !dropout.isNull, dropout.double != 0 {
            throw LlamaError.invalidTokenizer(
                path: path, reason: "model dropout \(dropout.summary) is not supported (supported: null)")
        }
        guard let rawVocab = json["vocab"]?.members else {
            throw LlamaError.invalidTokenizer(path: path, reason: "model has no \"vocab\" object")
        }
        var vocab: [[Unicode.Scalar]: Int32] = [:]
        vocab.reserveCapacity(rawVocab.count)
        var vocabR: [Int32: String] = [:]
        vocabR.reserveCapacity(rawVocab.count)
        var scalarVocab: [UInt32: Int32] = [:]
        for (token, value) in rawVocab {
            guard let n = value.int, n >= 0, n <= Int(Int32.max) else {
                throw LlamaError.invalidTokenizer(path: path, reason: "model vocab entry \"\(token)\" has id \(value.summary), not a non-negative integer")
            }
            let id = Int32(n)
            let scalars = Array(token.unicodeScalars)
            vocab[scalars] = id
            vocabR[id] = token
            if scalars.count == 1 { scalarVocab[scalars[0].value] = id }
        }
        self.vocab = vocab
        self.vocabR = vocabR
        self.scalarVocab = scalarVocab

        let prefix = json["continuing_subword_prefix"]?.string.map { Array($0.unicodeScalars) }
        continuingSubwordPrefix = prefix
        endOfWordSuffix = json["end_of_word_suffix"]?.string.map { Array($0.unicodeScalars) }
        let prefixLen = prefix?.count ?? 0

        var merges: [UInt64: UInt64] = [:]
        let rawMerges = json["merges"]?.array ?? []
        merges.reserveCapacity(rawMerges.count)
        for (rank, m) in rawMerges.enumerated() {
            let a: [Unicode.Scalar], b: [Unicode.Scalar]
            if let s = m.string {
                let scalars = Array(s.unicodeScalars)
                guard let space = scalars.firstIndex(of: " ") else {
                    throw LlamaError.invalidTokenizer(path: path, reason: "model merges[\(rank)] \"\(s)\" is not \"left right\"")
                }
                a = Array(scalars[..<space])
                b = Array(scalars[(space + 1)...])
            } else if let pair = m.array, pair.count == 2, let l = pair[0].string, let r = pair[1].string {
                a = Array(l.unicodeScalars)
                b = Array(r.unicodeScalars)
            } else {
                throw LlamaError.invalidTokenizer(path: path, reason: "model merges[\(rank)] is neither \"a b\" nor [a, b]")
            }
            guard let ia = vocab[a], let ib = vocab[b] else {
                throw LlamaError.invalidTokenizer(
                    path: path, reason: "model merges[\(rank)] uses a token missing from the vocab: \"\(String(String.UnicodeScalarView(a)))\" \"\(String(String.UnicodeScalarView(b)))\"")
            }
            let merged = a + b.dropFirst(prefixLen)
            guard let inew = vocab[merged] else {
                throw LlamaError.invalidTokenizer(
                    path: path, reason: "model merges[\(rank)] result \"\(String(String.UnicodeScalarView(merged)))\" is missing from the vocab")
            }
            merges[UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))] = UInt64(rank) << 32 | UInt64(UInt32(inew))
        }
        self.merges = merges

        if let unk = json["unk_token"]?.string {
            guard let id = vocab[Array(unk.unicodeScalars)] else {
                throw LlamaError.invalidTokenizer(path: path, reason: "model unk_token \"\(unk)\" is missing from the vocab")
            }
            unkId = id
        } else {
            unkId = nil
        }
        fuseUnk = json["fuse_unk"]?.bool ?? false
        byteFallback = json["byte_fallback"]?.bool ?? false
        ignoreMerges = json["ignore_merges"]?.bool ?? false
        var byteIds: [Int32] = []
        for b in 0..<256 {
            guard let id = vocab[Self.byteToken(UInt8(b))] else { break }
            byteIds.append(id)
        }
        self.byteIds = byteIds.count == 256 ? byteIds : nil
    }

    /// Appends the ids of one pre-tokenized word.
    func tokenize(_ word: [Unicode.Scalar], into out: inout [Int32], cache: inout [[Unicode.Scalar]: [Int32]]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab[word] {
            out.append(id)
            return
        }
        let cacheable = word.count < 256
        if cacheable, let hit = cache[word] {
            out.append(contentsOf: hit)
            return
        }
        let ids = mergeWord(word)
        if cacheable { cache[word] = ids }
        out.append(contentsOf: ids)
    }

    private func lookup(_ word: [Unicode.Scalar], _ i: Int) -> (id: Int32?, text: [Unicode.Scalar]?) {
        let isFirst = i == 0, isLast = i == word.count - 1
        let needsPrefix = !isFirst && continuingSubwordPrefix != nil
        let needsSuffix = isLast && endOfWordSuffix != nil
        if !needsPrefix && !needsSuffix { return (scalarVocab[word[i].value], nil) }
        var s: [Unicode.Scalar] = []
        if needsPrefix, let p = continuingSubwordPrefix { s += p }
        s.append(word[i])
        if needsSuffix, let suf = endOfWordSuffix { s += suf }
        return (vocab[s], s)
    }

    private func mergeWord(_ word: [Unicode.Scalar]) -> [Int32] {
        var ids: [Int32] = []
        ids.reserveCapacity(word.count)
        var pendingUnk = false
        for i in 0..<word.count {
            let (id, text) = lookup(word, i)
            if let id {
                if pendingUnk, let u = unkId { ids.append(u); pendingUnk = false }
                ids.append(id)
                continue
            }
            if byteFallback {
                let bytes: [UInt8] = Array(String(String.UnicodeScalarView(text ?? [word[i]])).utf8)
                if let table = byteIds {
                    for b in bytes { ids.append(table[Int(b)]) }
                    continue
                }
                var found: [Int32] = []
                for b in bytes {
                    guard let id = vocab[Self.byteToken(b)] else { break }
                    found.append(id)
                }
                if found.count == bytes.count { ids.append(contentsOf: found); continue }
            }
            if let u = unkId {
                if pendingUnk && !fuseUnk { ids.append(u) }
                pendingUnk = true
            }
        }
        if pendingUnk, let u = unkId { ids.append(u) }
        if ids.count < 2 || merges.isEmpty { return ids }
        return mergeAll(ids)
    }

    /// `Word::merge_all`: repeatedly merges the lowest-rank pair (leftmost on ties).
    private func mergeAll(_ start: [Int32]) -> [Int32] {
        let n = start.count
        var ids = start
        var prev = [Int32](repeating: -1, count: n)
        var next = [Int32](repeating: -1, count: n)
        var alive = [Bool](repeating: true, count: n)
        for i in 0..<n {
            prev[i] = Int32(i - 1)
            next[i] = i + 1 < n ? Int32(i + 1) : -1
        }
        var heap = HFMergeHeap()
        heap.reserve(n)
        for i in 0..<(n - 1) {
            if let m = merges[UInt64(UInt32(ids[i])) << 32 | UInt64(UInt32(ids[i + 1]))] {
                heap.push(rank: UInt32(m >> 32), pos: UInt32(i), newId: Int32(truncatingIfNeeded: m))
            }
        }
        while let top = heap.pop() {
            let pos = Int(top.pos)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = Int(next[pos])
            guard let m = merges[UInt64(UInt32(ids[pos])) << 32 | UInt64(UInt32(ids[right]))],
                  Int32(truncatingIfNeeded: m) == top.newId else { continue }
            ids[pos] = top.newId
            alive[right] = false
            let rightNext = next[right]
            next[pos] = rightNext
            if rightNext >= 0 { prev[Int(rightNext)] = Int32(pos) }
            let p = prev[pos]
            if p >= 0, let m2 = merges[UInt64(UInt32(ids[Int(p)])) << 32 | UInt64(UInt32(ids[pos]))] {
                heap.push(rank: UInt32(m2 >> 32), pos: UInt32(p), newId: Int32(truncatingIfNeeded: m2))
            }
            if rightNext >= 0, let m3 = merges[UInt64(UInt32(ids[pos])) << 32 | UInt64(UInt32(ids[Int(rightNext)]))] {
                heap.push(rank: UInt32(m3 >> 32), pos: UInt32(pos), newId: Int32(truncatingIfNeeded: m3))
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(n)
        for i in 0..<n where alive[i] { out.append(ids[i]) }
        return out
    }
}

/// A binary min-heap of merges ordered by (rank, position).
struct HFMergeHeap {
    struct Entry {
        var key: UInt64  // rank << 32 | pos
        var newId: Int32
        var rank: UInt32 { UInt32(key >> 32) }
        var pos: UInt32 { UInt32(truncatingIfNeeded: key) }
    }
    private var items: [Entry] = []

    mutating func reserve(_ n: Int) { items.reserveCapacity(n) }

    mutating func push(rank: UInt32, pos: UInt32, newId: Int32) {
        items.append(Entry(key: UInt64(rank) << 32 | UInt64(pos), newId: newId))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent].key <= items[i].key { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < n && items[l].key < items[smallest].key { smallest = l }
                if r < n && items[r].key < items[smallest].key { smallest = r }
                if smallest == i { break }
                items.swapAt(i, smallest)
                i = smallest
            }
        }
        return first
    }
}
