import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Wire

/// The learner's state on disk, so that a plan resumes after the learner process itself is lost: at the
/// end of every plan step the coordinator asks for SAVE_STATE, and the learner writes every model it
/// trains (the policy, each reward model, the value model) with its optimizer moments and version, the
/// chat model an SFT step made and the policy snapshots rounds branch from, to `STATE_DIR/after-step-N/` (N is the 1-based step), one `TrainingState`
/// file each. A learner started with `--restore-step` reads them back and serves the same versions again.
extension LearnerService {
    /// The directory of the state after 0-based plan step `step`.
    public static func stateDirectory(_ root: String, afterStep step: Int) -> String { root + "/after-step-\(step + 1)" }

    static let policyFile = "policy.state", valueFile = "value.state", referenceFile = "reference.state", snapshotsFile = "snapshots.json"
    static func rewardFile(_ kind: ModelKind) -> String { kind == .safetyModel ? "safety-model.state" : "reward-model.state" }

    /// Every model's current announcement, the policy's first.
    func announcements() -> [WeightAnnouncement] {
        lock.withLock {
            [announcement] + [ModelKind.rewardModel, .safetyModel].compactMap { rewardModels[$0]?.announce } + [reference?.announce].compactMap { $0 }
        }
    }

    /// ANNOUNCE_ALL: the policy's version and every model's announcement.
    func announceAll() -> TrainStats {
        var stats = TrainStats(kind: .announceAll)
        stats.announces = announcements()
        stats.policyVersion = policyVersion
        stats.announce = stats.announces[0]
        return stats
    }

    /// SAVE_STATE: writes every model to `after-step-N/` (through a `.partial` directory renamed into
    /// place, so a crash leaves the old state or the new), keeps the previous step's state and removes
    /// older ones.
    func saveState(afterStep step: Int) throws -> TrainStats {
        guard let root = settings.stateDirectory else {
            throw LlamaError.invalidInput("this learner keeps no state (start it with --state-dir)")
        }
        let target = LearnerService.stateDirectory(root, afterStep: step), partial = target + ".partial"
        let files = FileManager.default
        try? files.removeItem(atPath: partial)
        try files.createDirectory(atPath: partial, withIntermediateDirectories: true)
        try lock.withLock {
            // With LoRA: the frozen base, the adapters and their optimizer moments.
            let adapters = trainer.lora.map { ($0.settings, $0.values) }
            try TrainingState(weights: trainer.weights, optimizer: optimizer, step: Int(version), rng: SeededGenerator(seed: 0), dataPosition: 0,
                              lora: adapters)
                .write(to: partial + "/" + LearnerService.policyFile)
            for (kind, model) in rewardModels {
                try TrainingState(weights: model.trainer.weights, optimizer: model.optimizer, step: Int(model.version), rng: SeededGenerator(seed: 0),
                                  dataPosition: 0, heads: ["score": model.head]).write(to: partial + "/" + LearnerService.rewardFile(kind))
            }
            if let reference {
                // The chat model an SFT step made (no optimizer of its own; its step is the version it was made at).
                try TrainingState(weights: initialWeights, optimizer: AdamW(settings: settings.optimizer, groupSizes: []),
                                  step: Int(reference.announce.policyVersion), rng: SeededGenerator(seed: 0), dataPosition: 0)
                    .write(to: partial + "/" + LearnerService.referenceFile)
            }
            if !snapshots.isEmpty {
                // Names may hold any characters: files are numbered, snapshots.json maps names to them.
                let names = snapshots.keys.sorted()
                for (i, name) in names.enumerated() {
                    let saved = snapshots[name]!
                    try TrainingState(weights: trainer.lora == nil ? ModelWeights(config: trainer.config, storage: saved) : trainer.weights,
                                      optimizer: AdamW(settings: settings.optimizer, groupSizes: []), step: 0,
                                      rng: SeededGenerator(seed: 0), dataPosition: 0, lora: trainer.lora.map { ($0.settings, saved) })
                        .write(to: partial + "/snapshot-\(i).state")
                }
                try JSONEncoder().encode(names).write(to: URL(fileURLWithPath: partial + "/" + LearnerService.snapshotsFile))
            }
            if let value = valueModel {
                try TrainingState(weights: value.trainer.weights, optimizer: value.optimizer, step: 0, rng: SeededGenerator(seed: 0), dataPosition: 0,
                                  heads: ["value": value.head]).write(to: partial + "/" + LearnerService.valueFile)
            }
        }
        try? files.removeItem(atPath: target)
        try files.moveItem(atPath: partial, toPath: target)
        for name in (try? files.contentsOfDirectory(atPath: root)) ?? [] {
            guard name.hasPrefix("after-step-"), let n = Int(name.dropFirst("after-step-".count)), n < step else { continue }
            try? files.removeItem(atPath: root + "/" + name)
        }
        var stats = announceAll()
        stats.kind = .saveState
        return stats
    }

    /// Reads the state saved after 0-based plan step `step` and serves it: the policy's weights,
    /// optimizer and version, each reward model (with a weight server of its own) and the value model.
    /// A missing or damaged file is an error that names it.
    public func restoreState(afterStep step: Int) throws {
        guard let root = settings.stateDirectory else { throw LlamaError.invalidInput("--restore-step needs --state-dir") }
        let directory = LearnerService.stateDirectory(root, afterStep: step)
        let policy = try TrainingState.read(path: directory + "/" + LearnerService.policyFile)
        guard policy.weights.config == trainer.config else {
            throw LlamaError.invalidInput("\(directory)/\(LearnerService.policyFile) holds a model of another shape than --checkpoint")
        }
        try lock.withLock {
            if let adapters = trainer.lora {
                // The adapters go back onto the base this learner holds, which must be the one they were trained on.
                guard let saved = policy.lora, saved.settings.rank == adapters.settings.rank, saved.settings.targets == adapters.settings.targets,
                      saved.values.count == adapters.values.count else {
                    throw LlamaError.invalidInput("\(directory)/\(LearnerService.policyFile) holds no LoRA adapters of these settings (rank \(adapters.settings.rank), targets \(adapters.settings.targets.map(\.name)))")
                }
                guard policy.weights.checksum == trainer.weights.checksum else {
                    throw LlamaError.invalidInput("\(directory)/\(LearnerService.policyFile) holds LoRA adapters of another base than --checkpoint")
                }
                adapters.values.update(from: saved.values)
            } else {
                guard policy.lora == nil else {
                    throw LlamaError.invalidInput("\(directory)/\(LearnerService.policyFile) holds LoRA adapters: start the learner with the spec's lora settings")
                }
                trainer.weights.storage.update(from: policy.weights.storage)
            }
            try optimizer.load(policy.optimizer)
            version = UInt64(policy.step)
            let publisher = LearnerService.policyPublisher(trainer, base: loraBase?.announce, version: version, settings: settings,
                                                           source: advertisedEndpoint)
            server.publish(publisher)
            announcement = publisher.announcement
            checksum = publisher.announcement.modelChecksum
            for kind in [ModelKind.rewardModel, .safetyModel] {
                let path = directory + "/" + LearnerService.rewardFile(kind)
                guard FileManager.default.fileExists(atPath: path) else { continue }
                let saved = try TrainingState.read(path: path)
                guard let head = saved.heads["score"] else { throw LlamaError.invalidInput("\(path) has no score head") }
                let (server, advertised) = try serving.open()
                let model = RewardTraining(weights: saved.weights, head: head, pool: trainer.pool, precision: settings.precision,
                                           optimizer: settings.optimizer, server: server,
                                           advertised: advertised)
                try model.optimizer.load(saved.optimizer)
                _ = model.publish(UInt64(saved.step), kind: kind, chunkBytes: settings.chunkBytes)
                rewardModels[kind] = model
            }
            let referencePath = directory + "/" + LearnerService.referenceFile
            if FileManager.default.fileExists(atPath: referencePath) {
                let saved = try TrainingState.read(path: referencePath)
                guard saved.weights.config == trainer.config else {
                    throw LlamaError.invalidInput("\(referencePath) holds a model of another shape than --checkpoint")
                }
                initialWeights.storage.set(saved.weights.storage.array(0..<saved.weights.storage.count), at: 0)
                _ = try publishReference(version: UInt64(saved.step))
            }
            let snapshotsPath = directory + "/" + LearnerService.snapshotsFile
            if let data = FileManager.default.contents(atPath: snapshotsPath) {
                let names: [String]
                do { names = try JSONDecoder().decode([String].self, from: data) } catch {
                    throw LlamaError.invalidInput("\(snapshotsPath) is not a list of snapshot names: \(error)")
                }
                for (i, name) in names.enumerated() {
                    let saved = try TrainingState.read(path: directory + "/snapshot-\(i).state")
                    guard saved.weights.config == trainer.config else {
                        throw LlamaError.invalidInput("\(directory)/snapshot-\(i).state holds a model of another shape than --checkpoint")
                    }
                    let values = trainer.lora == nil ? saved.weights.storage : saved.lora?.values
                    guard let values, values.count == trainedValues.count else {
                        throw LlamaError.invalidInput("\(directory)/snapshot-\(i).state does not hold what this learner trains (\(trainer.lora == nil ? "whole weights" : "LoRA adapters"))")
                    }
                    snapshots[name] = values
                }
            }
            let valuePath = directory + "/" + LearnerService.valueFile
            if FileManager.default.fileExists(atPath: valuePath) {
                let saved = try TrainingState.read(path: valuePath)
                guard let head = saved.heads["value"] else { throw LlamaError.invalidInput("\(valuePath) has no value head") }
                let model = HeadedTraining(weights: saved.weights, head: head, pool: trainer.pool, precision: settings.precision, optimizer: settings.optimizer)
                try model.optimizer.load(saved.optimizer)
                valueModel = model
            }
        }
    }
}
