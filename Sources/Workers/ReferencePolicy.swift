import Foundation
import LlamaCore
import LlamaTraining
import Synchronization
import Wire

/// The reference-policy role: per-token log-probabilities of given responses under a frozen copy of
/// the policy, for PPO's KL penalty. A REFERENCE_LOGPROB_REQUEST is answered with the tensor frame
/// "logprobs": for each sequence in order, `log p(response[j] | prompt, response[..<j])` for every
/// response token, back to back (`sum(len(response))` values). It follows the learner only when the
/// coordinator syncs it (between rounds), and refuses requests for another version.
public final class ReferencePolicy: RoleService, @unchecked Sendable {
    private let held: VersionedModel<TrainableTransformer>
    private let pool: ComputePool
    private let tokens = Atomic<UInt64>(0)

    /// A reference policy of `weights` at `policyVersion` on `threads` threads.
    public init(weights: ModelWeights, threads: Int = 1, policyVersion: UInt64 = 0) {
        pool = ComputePool(threads: threads)
        held = VersionedModel(TrainableTransformer(weights: weights, pool: pool), version: policyVersion,
                              checksum: weights.checksum)
    }

    public var policyVersion: UInt64 { held.snapshot.version }
    public var weightsChecksum: UInt32 { held.snapshot.checksum }
    public var tokensProcessed: UInt64 { tokens.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { held.snapshot.model.config }

    /// Log-probabilities of each sequence's response tokens (`responseLengths[i]` per sequence).
    public func responseLogProbs(_ sequences: [[Int32]], responseLengths: [Int]) throws -> [[Float]] {
        let model = held.snapshot.model
        let all = try model.tokenLogProbs(sequences: sequences)
        tokens.add(UInt64(sequences.reduce(0) { $0 + $1.count }), ordering: .relaxed)
        return zip(all, responseLengths).map { Array($0.suffix($1)) }
    }

    public func handle(_ message: WireMessage) throws -> WireMessage {
        guard message.type == .referenceLogprobRequest else {
            throw LlamaError.invalidInput("a reference policy serves REFERENCE_LOGPROB_REQUEST, not \(message.type)")
        }
        let version = policyVersion
        guard message.policyVersion == version else {
            throw LlamaError.invalidInput("policy version \(message.policyVersion) requested, this reference holds \(version)")
        }
        let request = try message.decodeBody(Rlhf_V1_ReferenceLogProbRequest.self)
        guard let config = modelConfig else { throw LlamaError.invalidInput("no model loaded") }
        let joined = try joinedSequences(request.sequences, config: config)
        let values = try responseLogProbs(joined, responseLengths: request.sequences.map(\.responseIds.count))
        return try WireMessage(type: .referenceLogprobResult, requestID: message.requestID, body: Rlhf_V1_ReferenceLogProbResult(),
                               tensors: [WireTensor(name: "logprobs", floats: Array(values.joined()))], policyVersion: version)
    }

    public func install(_ weights: ModelWeights, version: UInt64) throws {
        let model = TrainableTransformer(weights: weights, pool: pool)
        let checksum = weights.checksum
        held.replace(model, version: version, checksum: checksum)
    }
}
