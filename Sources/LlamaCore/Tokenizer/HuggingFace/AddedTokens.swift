import Foundation

/// One entry of `added_tokens`.
struct HFAddedToken: Sendable {
    let id: Int32
    let content: String
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    let normalized: Bool
    let special: Bool

    init(json: HFJSON, path: String) throws {
        guard let id = json["id"]?.int, id >= 0, id <= Int(Int32.max), let content = json["content"]?.string else {
            throw LlamaError.invalidTokenizer(path: path, reason: "added_tokens entry \(json.summary) needs an integer \"id\" and a \"content\" string")
        }
        self.id = Int32(id)
        self.content = content
        singleWord = json["single_word"]?.bool ?? false
        lstrip = json["lstrip"]?.bool ?? false
        rstrip = json["rstrip"]?.bool ?? false
        special = json["special"]?.bool ?? false
        normalized = json["normalized"]?.bool ?? !special
    }
}

/// A trie over Unicode scalars finding added tokens leftmost-longest, like the Aho-Corasick
/// automaton `tokenizers` builds (`MatchKind::LeftmostLongest`): at each start position the
/// longest token wins, and the search resumes after it. Linear in text length times the longest token.
struct HFAddedTokenTrie: Sendable {
    private var children: [[UInt32: Int32]] = [[:]]
    /// Index into `tokens` of the token ending at each node, or -1.
    private var terminal: [Int32] = [-1]
    var isEmpty: Bool { children.count == 1 }

    /// Adds `pattern` for token index `value`; the first pattern added for a string wins.
    mutating func insert(_ pattern: [Unicode.Scalar], value: Int32) {
        guard !pattern.isEmpty else { return }
        var node = 0
        for c in pattern {
            if let next = children[node][c.value] {
                node = Int(next)
            } else {
                children.append([:])
                terminal.append(-1)
                children[node][c.value] = Int32(children.count - 1)
                node = children.count - 1
            }
        }
        if terminal[node] < 0 { terminal[node] = value }
    }

    /// The longest match starting at `i`: (end, value).
    func longestMatch(_ s: [Unicode.Scalar], at i: Int) -> (end: Int, value: Int32)? {
        var node = 0
        var best: (Int, Int32)? = nil
        var k = i
        while k < s.count, let next = children[node][s[k].value] {
            node = Int(next)
            k += 1
            if terminal[node] >= 0 { best = (k, terminal[node]) }
        }
        return best
    }
}

/// The added vocabulary: the two tries (tokens matched on the raw text, and tokens matched on the
/// normalized text) and `find_matches` with single_word / lstrip / rstrip.
struct HFAddedVocabulary: Sendable {
    let tokens: [HFAddedToken]
    private var rawTrie = HFAddedTokenTrie()
    private var normalizedTrie = HFAddedTokenTrie()

    init(tokens: [HFAddedToken], normalizer: HFNormalizer?) {
        self.tokens = tokens
        for (k, t) in tokens.enumerated() {
            if t.normalized {
                var piece = HFPiece(Array(t.content.unicodeScalars), originZero: 0)
                normalizer?.normalize(&piece)
                normalizedTrie.insert(piece.scalars, value: Int32(k))
            } else {
                rawTrie.insert(Array(t.content.unicodeScalars), value: Int32(k))
            }
        }
    }

    /// A split of the text: a piece for the model, or an added token's id.
    enum Split {
        case text(HFPiece)
        case token(Int32)
    }

    /// `find_matches` + `split_with_indices` on one piece (raw or normalized trie); empty pieces dropped.
    func split(_ piece: HFPiece, normalizedTokens: Bool, into out: inout [Split]) {
        let trie = normalizedTokens ? normalizedTrie : rawTrie
        let s = piece.scalars
        if trie.isEmpty || s.isEmpty {
            if !s.isEmpty { out.append(.text(piece)) }
            return
        }
        var startOffset = 0
        var i = 0
        func emit(_ r: Range<Int>) {
            if !r.isEmpty { out.append(.text(r.count == s.count ? piece : piece.slice(r))) }
        }
        while i < s.count {
            guard let (end, value) = trie.longestMatch(s, at: i) else { i += 1; continue }
            let token = tokens[Int(value)]
            var start = i
            var stop = end
            i = end
            if token.singleWord {
                let startSpace = start == 0 || !HFUnicode.isRegexWord(s[start - 1])
                let stopSpace = stop == s.count || !HFUnicode.isRegexWord(s[stop])
                if !startSpace || !stopSpace { continue }
            }
            if token.lstrip {
                var newStart = start
                while newStart > 0 && HFUnicode.isSpace(s[newStart - 1]) { newStart -= 1 }
                start = max(newStart, startOffset)
            }
            if token.rstrip {
                while stop < s.count && HFUnicode.isSpace(s[stop]) { stop += 1 }
            }
            if startOffset < start { emit(startOffset..<start) }
            out.append(.token(token.id))
            startOffset = stop
        }
        if startOffset < s.count { emit(startOffset..<s.count) }
    }
}
