import LlamaCore

/// Sequences trained together. Their tokens are laid out as rows one sequence after another (no
/// padding): matrix products run over all rows, attention stays inside each sequence.
///
/// Shape letters of LlamaTraining: `N` rows (all tokens of the batch), plus LlamaCore's `D`, `H`, `V`,
/// `KVD`, `hs`, `L`.
public struct TokenBatch: Sendable, Equatable {
    /// The sequences, each non-empty and at most `seq_len` long.
    public let sequences: [[Int32]]
    /// Row of each sequence's first token.
    public let offsets: [Int]
    /// Total rows `N`.
    public let rowCount: Int
    /// Position of each row's token in its sequence, `(N)`.
    public let positions: [Int]
    /// Each row's token, `(N)`: the sequences one after another.
    public let tokens: [Int32]

    /// Validates `sequences` against `config` (non-empty, within `seq_len`, ids in the vocabulary).
    public init(_ sequences: [[Int32]], config: LlamaConfig) throws {
        guard !sequences.isEmpty else { throw LlamaError.invalidInput("a training batch needs at least one sequence") }
        var offsets: [Int] = []
        var row = 0
        for (i, s) in sequences.enumerated() {
            guard !s.isEmpty else { throw LlamaError.invalidInput("sequence \(i) of the batch is empty") }
            guard s.count <= config.seqLen else {
                throw LlamaError.invalidInput("sequence \(i) has \(s.count) tokens, more than seq_len \(config.seqLen)")
            }
            for id in s where id < 0 || Int(id) >= config.vocabSize {
                throw LlamaError.invalidInput("sequence \(i): token id \(id) outside the vocabulary 0..<\(config.vocabSize)")
            }
            offsets.append(row)
            row += s.count
        }
        self.sequences = sequences
        self.offsets = offsets
        self.rowCount = row
        self.positions = sequences.flatMap { 0..<$0.count }
        self.tokens = sequences.flatMap { $0 }
    }

    /// Row of token `position` of sequence `index`.
    public func row(sequence index: Int, position: Int) -> Int { offsets[index] + position }

    /// Row of each sequence's last token.
    public var lastRows: [Int] { sequences.indices.map { offsets[$0] + sequences[$0].count - 1 } }
}
