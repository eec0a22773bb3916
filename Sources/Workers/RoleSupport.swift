import Foundation
import LlamaCore
import Wire

/// Splits `sequences` of a score, reference or train request into `(prompt + response)` token lists,
/// refusing empty responses and sequences longer than the model's context by index.
func joinedSequences(_ sequences: [TokenSequence], config: LlamaConfig) throws -> [[Int32]] {
    guard !sequences.isEmpty else { throw LlamaError.invalidInput("the request has no sequences") }
    return try sequences.enumerated().map { index, s in
        guard !s.response.isEmpty else { throw LlamaError.invalidInput("sequence \(index) (id \(s.id)) has an empty response") }
        guard !s.prompt.isEmpty else { throw LlamaError.invalidInput("sequence \(index) (id \(s.id)) has an empty prompt") }
        let joined = s.prompt + s.response
        guard joined.count <= config.seqLen else {
            throw LlamaError.invalidInput("sequence \(index) (id \(s.id)) has \(joined.count) tokens, over the model's context of \(config.seqLen)")
        }
        if let bad = joined.first(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            throw LlamaError.invalidInput("sequence \(index) (id \(s.id)) has token id \(bad), outside the vocabulary of \(config.vocabSize)")
        }
        return joined
    }
}

/// A role's model with the policy version and weights checksum it was built from, read and swapped
/// together under a lock (a request takes a consistent triple; an install replaces it whole).
final class VersionedModel<Model>: @unchecked Sendable {
    private let lock = NSLock()
    private var current: (model: Model, version: UInt64, checksum: UInt32)

    init(_ model: Model, version: UInt64, checksum: UInt32) { current = (model, version, checksum) }

    /// The model, its version and checksum, as one snapshot.
    var snapshot: (model: Model, version: UInt64, checksum: UInt32) { lock.withLock { current } }

    /// Replaces all three at once.
    func replace(_ model: Model, version: UInt64, checksum: UInt32) { lock.withLock { current = (model, version, checksum) } }
}
