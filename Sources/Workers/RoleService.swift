import Foundation
import LlamaCore
import Wire

/// What a worker daemon drives: one role's compute. The daemon calls `handle` for each work message
/// and `install` for each weight version it fetched, both on its compute queue (never at once), so a
/// swap happens between requests and a request never sees half-installed weights.
public protocol RoleService: AnyObject, Sendable {
    /// The policy version of the weights held (0 before the first sync).
    var policyVersion: UInt64 { get }
    /// CRC-32C of the weights held (`ModelWeights.checksum`).
    var weightsChecksum: UInt32 { get }
    /// Tokens processed so far (generated, scored or trained), for throughput reports.
    var tokensProcessed: UInt64 { get }
    /// The model configuration fetched weights must match; nil for a role that holds no model.
    var modelConfig: LlamaConfig? { get }
    /// Serves one work message; throws a `LlamaError` or `WireError` naming what was wrong with it.
    func handle(_ message: WireMessage) throws -> WireMessage
    /// Swaps in verified weights of `version` (the role refuses requests for any other version after).
    func install(_ weights: ModelWeights, version: UInt64) throws
    /// Swaps in verified weights with what else their announcement carries (a reward model's head).
    func install(_ weights: ModelWeights, version: UInt64, announce: Rlhf_V1_WeightAnnounce) throws
}

extension RoleService {
    /// Roles that never follow the learner refuse weight installs.
    public func install(_ weights: ModelWeights, version: UInt64) throws {
        throw LlamaError.invalidInput("this role does not take weight versions")
    }

    /// Policy consumers take the policy's weights (`announce.model` unspecified) and nothing else.
    public func install(_ weights: ModelWeights, version: UInt64, announce: Rlhf_V1_WeightAnnounce) throws {
        guard announce.model == .unspecified else {
            throw LlamaError.invalidInput("weights of the \(announce.model) were announced to a policy consumer")
        }
        try install(weights, version: version)
    }
}

extension Rlhf_V1_WeightAnnounce {
    /// CRC-32C of all tensors back to back, combined from the per-tensor checksums.
    public var modelChecksum: UInt32 {
        tensors.dropFirst().reduce(tensors.first?.crc32C ?? 0) {
            CRC32C.combine($0, $1.crc32C, lengthOfB: Int($1.byteLength))
        }
    }
}

/// Splits `sequences` of a score, reference or train request into `(prompt + response)` token lists,
/// refusing empty responses and sequences longer than the model's context by index.
func joinedSequences(_ sequences: [Rlhf_V1_Sequence], config: LlamaConfig) throws -> [[Int32]] {
    guard !sequences.isEmpty else { throw LlamaError.invalidInput("the request has no sequences") }
    return try sequences.enumerated().map { index, s in
        guard !s.responseIds.isEmpty else { throw LlamaError.invalidInput("sequence \(index) (id \(s.id)) has an empty response") }
        guard !s.promptIds.isEmpty else { throw LlamaError.invalidInput("sequence \(index) (id \(s.id)) has an empty prompt") }
        let joined = s.promptIds + s.responseIds
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
