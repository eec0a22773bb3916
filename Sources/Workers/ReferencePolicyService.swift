import ClusterRuntime
import Distributed
import Foundation
import LlamaCore
import LlamaTraining
import Synchronization
import Wire

/// The reference-policy role's compute: per-token log-probabilities of given responses under a frozen
/// copy of the policy, for PPO's KL penalty. It follows the learner only when the coordinator syncs it
/// (between rounds), and refuses requests for another version. `ReferencePolicy` is its distributed actor.
public final class ReferencePolicyService: RoleService, @unchecked Sendable {
    private let held: VersionedModel<TrainableTransformer>
    private let pool: ComputePool
    private let tokens = Atomic<UInt64>(0)

    /// A reference policy of `weights` at `policyVersion` on `threads` threads.
    public init(weights: ModelWeights, threads: Int = 1, policyVersion: UInt64 = 0) {
        pool = ComputePool(threads: threads)
        held = VersionedModel(ReferencePolicyService.scorer(weights, pool: pool), version: policyVersion, checksum: weights.checksum)
    }

    /// A transformer of `weights` that only scores (each version installed gets its own).
    private static func scorer(_ weights: ModelWeights, pool: ComputePool) -> TrainableTransformer {
        let model = TrainableTransformer(weights: weights, pool: pool)
        model.prepareForScoring()
        return model
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

    /// `log p(response[j] | prompt, response[..<j])` for every response token of each sequence; refuses
    /// a request for another version than the one held.
    public func logProbs(_ request: LogProbRequest) throws -> LogProbs {
        let (model, version, _) = held.snapshot
        guard request.policyVersion == version else {
            throw LlamaError.invalidInput("policy version \(request.policyVersion) requested, this reference holds \(version)")
        }
        let joined = try joinedSequences(request.sequences, config: model.config)
        let all = try model.tokenLogProbs(sequences: joined)
        tokens.add(UInt64(joined.reduce(0) { $0 + $1.count }), ordering: .relaxed)
        return LogProbs(values: zip(all, request.sequences).map { Array($0.suffix($1.response.count)) }, policyVersion: version)
    }

    public func hostActor(on actorSystem: ClusterActorSystem, as name: String) -> any DistributedActor {
        let actor = ReferencePolicy(service: self, actorSystem: actorSystem)
        actorSystem.publish(actor, as: name)
        return actor
    }

    /// Takes the chat model a plan's SFT step made (model `.reference`), or a policy version.
    public func install(_ weights: ModelWeights, version: UInt64, announce: WeightAnnouncement) throws {
        guard announce.model == .reference || announce.model == .policy else {
            throw LlamaError.invalidInput("weights of the \(announce.model.rawValue) were announced to the reference policy")
        }
        try install(weights, version: version)
    }

    public func install(_ weights: ModelWeights, version: UInt64) throws {
        let model = ReferencePolicyService.scorer(weights, pool: pool)
        let checksum = weights.checksum
        held.replace(model, version: version, checksum: checksum)
    }
}
