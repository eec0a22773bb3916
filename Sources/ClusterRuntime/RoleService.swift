import Distributed
import LlamaCore
import Wire

/// A role's compute, as its worker daemon sees it: the version and checksum of the weights held (for
/// heartbeats), weight installs, and the role's distributed actor, which serves the calls. The actor's
/// calls and the daemon's installs run on one compute queue (the actor system's `computeExecutor`),
/// never at once, so a swap happens between calls and a call never sees half-installed weights.
public protocol RoleService: AnyObject, Sendable {
    /// The policy version of the weights held (0 before the first sync).
    var policyVersion: UInt64 { get }
    /// CRC-32C of the weights held (`ModelWeights.checksum`).
    var weightsChecksum: UInt32 { get }
    /// Tokens processed so far (generated, scored or trained), for throughput reports.
    var tokensProcessed: UInt64 { get }
    /// The model configuration fetched weights must match; nil for a role that holds no model.
    var modelConfig: LlamaConfig? { get }
    /// The float32 weights the role holds now, where it keeps them (a generator: LoRA adapters merge
    /// into them when they are the adapters' base, which then need not be fetched).
    var heldWeights: ModelWeights? { get }
    /// Swaps in verified weights of `version` (the role refuses requests for any other version after).
    func install(_ weights: ModelWeights, version: UInt64) throws
    /// Swaps in verified weights with what else their announcement carries (a reward model's head).
    func install(_ weights: ModelWeights, version: UInt64, announce: WeightAnnouncement) throws
    /// Makes the role's distributed actor over this compute on `actorSystem` (running on its compute
    /// executor) and publishes it there under `name`. The daemon keeps the actor for the process's life.
    func hostActor(on actorSystem: ClusterActorSystem, as name: String) -> any DistributedActor
}

extension RoleService {
    public var heldWeights: ModelWeights? { nil }

    /// Roles that never follow the learner refuse weight installs.
    public func install(_ weights: ModelWeights, version: UInt64) throws {
        throw LlamaError.invalidInput("this role does not take weight versions")
    }

    /// Policy consumers take the policy's weights and nothing else.
    public func install(_ weights: ModelWeights, version: UInt64, announce: WeightAnnouncement) throws {
        guard announce.model == .policy else {
            throw LlamaError.invalidInput("weights of the \(announce.model.rawValue) were announced to a policy consumer")
        }
        try install(weights, version: version)
    }
}

