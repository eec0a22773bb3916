import ClusterRuntime
import LlamaCore
import Workers

extension ClusterSpec {
    /// What the plan asks of the learner beyond the policy: the reward models its steps train (`train_rm`,
    /// and both where a round retrains them on `new_pairs`), and a value model where a PPO step runs.
    public var learnerLoad: WorkerMemory.LearnerLoad { learnerLoad(pretrainedConfigs: [:]) }

    /// `learnerLoad`, with the trained reward models that start from a pretrained one counted by their
    /// shapes in `pretrainedConfigs` (those read from `pretrainedRewardModels`).
    public func learnerLoad(pretrainedConfigs: [WorkerRole: LlamaConfig]) -> WorkerMemory.LearnerLoad {
        var rewardModels = Set<WorkerRole>()
        var valueModel = false
        for step in plan {
            rewardModels.formUnion(step.trainedRewardModels)
            switch step {
            case .ppo: valueModel = true
            case let .policyRound(settings) where settings.algorithm == .ppo: valueModel = true
            default: break
            }
        }
        let pretrained = rewardModels.sorted { $0.rawValue < $1.rawValue }.compactMap { pretrainedConfigs[$0] }
        return WorkerMemory.LearnerLoad(rewardModels: rewardModels.filter { pretrainedConfigs[$0] == nil }.count, valueModel: valueModel,
                                        pretrainedRewardModels: pretrained)
    }

    /// What the workers the spec starts on this machine (its `address: local` hosts) hold, by role,
    /// over a model of `config`: nil when that fits in `available` bytes, else why not, naming each role's
    /// share and parts (generators at the spec's `decode_slots`). Hosts elsewhere (ssh, Slurm, external)
    /// say at start-up what they hold. `roleConfigs` are the models of roles that run another (a
    /// pretrained reward model's).
    public func memoryShortfall(config: LlamaConfig, available: Int, roleConfigs: [WorkerRole: LlamaConfig] = [:]) -> String? {
        var counts: [WorkerRole: Int] = [:]
        for host in hosts where host.isLocal {
            for (role, count) in host.workers { counts[role, default: 0] += count }
        }
        let shares = counts.filter { $0.value > 0 }.sorted { $0.key.rawValue < $1.key.rawValue }.map { role, count in
            (role: role, count: count, memory: WorkerMemory.estimate(role: role, config: roleConfigs[role] ?? config, decodeSlots: decodeSlots,
                                                                       precision: role == .learner ? precision.learner : precision.generator,
                                                                       kvCache: precision.kvCache, learner: learnerLoad(pretrainedConfigs: roleConfigs),
                                                                       lora: lora))
        }
        let needed = shares.reduce(0) { $0 + $1.count * $1.memory.bytes }
        guard needed > available else { return nil }
        let detail = shares.filter { $0.memory.bytes > 0 }.map { share in
            "\(share.count) \(share.role.rawValue) x \(WorkerMemory.format(share.memory.bytes)) (\(share.memory))"
        }.joined(separator: "; ")
        return "the workers this spec starts on this machine need up to \(WorkerMemory.format(needed)) of memory, and it has "
            + "\(WorkerMemory.format(available)) available: \(detail). Start fewer workers here, or put some on other hosts"
    }
}
