import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Wire

extension RLHFPipeline {
    /// Settings of a plan's SFT step: supervised fine-tuning of the policy on demonstrations.
    public struct SFTSettings: Codable, Sendable, Equatable {
        /// The step's name: its status stage and `rounds/NAME/`, where its policy is written.
        public var name = "sft"
        /// Demonstrations used, the first ones of the source (nil: all).
        public var examples: Int?
        public var epochs = 1.0
        public var batchSize = 16
        /// The peak of the cosine schedule (after a short warm-up), as `rlhf train sft`.
        public var learningRate: Float = 1e-4
        public init() {}
    }

    /// Supervised fine-tuning on the learner (LLaMA2's SFT stage): the demonstrations in a seeded order,
    /// `batchSize` a step on a warm-up and cosine schedule, the loss on the answers' tokens only (each
    /// sequence's weights travel as the "mask" frame). The result becomes the chat model: the learner
    /// keeps it as the weights from-SFT rounds start again from and reward and value models start from,
    /// the generators get it as the policy, and the reference-policy workers as the reference.
    public func supervisedFineTuning(_ settings: SFTSettings, seed: UInt64) throws {
        let started = Date()
        guard let source = context.demonstrations else {
            throw ClusterLaunch.Failure(message: "the sft step needs demonstrations: data.sft, or the embedded task (task:)")
        }
        var examples = try source.sftSequences(seqLen: config.seqLen)
        if let n = settings.examples { examples = Array(examples.prefix(n)) }
        guard !examples.isEmpty else { throw ClusterLaunch.Failure(message: "the sft step has no demonstrations to train on") }
        let stage = PlanStage(.train, round: settings.name)
        coordinator.setProgress(stage)
        let steps = RLHFPipeline.scheduledBatches(count: examples.count, batchSize: settings.batchSize, epochs: settings.epochs,
                                                  learningRate: settings.learningRate, seed: seed)
        let total = steps.count
        var version = coordinator.status().policyVersion
        var losses: [Double] = []
        var last: TrainStats?
        for (index, planned) in steps.enumerated() {
            let step = index + 1
            let part = planned.indices.map { examples[$0] }
            var batch = TrainBatch(kind: .sft)
            batch.policyVersion = version
            batch.learningRate = planned.rate
            var weights: [Float] = []
            for (i, example) in part.enumerated() {
                let (prompt, response, mask) = RLHFPipeline.split(example)
                batch.sequences.append(sequence(UInt64(i), prompt, response))
                weights += mask
            }
            batch.tensors = [WireTensor(name: "mask", floats: weights)]
            let stats = try coordinator.train(batch)
            version = stats.policyVersion
            last = stats
            losses.append(stats.loss)
            coordinator.setProgress(stage, step: UInt64(step))
            metric(["stage": "sft", "name": settings.name, "step": step, "steps": total, "loss": stats.loss, "grad_norm": stats.gradNorm,
                    "learning_rate": stats.learningRate, "policy_version": version])
        }
        // The result becomes the chat model and the reference.
        var mark = TrainBatch(kind: .markInitial)
        mark.policyVersion = version
        let marked = try coordinator.train(mark)
        coordinator.setProgress(PlanStage(.sync, round: settings.name))
        guard let policy = last?.announce, let reference = marked.announce else {
            throw ClusterLaunch.Failure(message: "the learner announced no weights after the sft step")
        }
        try coordinator.syncWeights(policy, roles: [.generator])
        try coordinator.syncWeights(reference, roles: [.referencePolicy])
        let directory = runDirectory + "/rounds/\(settings.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try export.write(try coordinator.fetchWeights(policy, config: config), directory: directory)
        let tenth = max(1, losses.count / 10)
        let first = losses.prefix(tenth).reduce(0, +) / Double(tenth), final = losses.suffix(tenth).reduce(0, +) / Double(tenth)
        report(String(format: "%@: SFT on the learner, %d demonstrations, %d steps of %d at peak learning rate %g: loss %.4f -> %.4f "
                      + "(means of the first and last tenth); policy v%llu is the chat model and the reference; %.1f s",
                      settings.name, examples.count, total, settings.batchSize, Double(settings.learningRate), first, final, version,
                      Date().timeIntervalSince(started)))
        metric(["stage": "sft_done", "name": settings.name, "steps": total, "examples": examples.count, "loss_first": first, "loss_last": final,
                "policy_version": version])
    }

    /// A demonstration as the learner's SFT batches carry it: the tokens up to its first trained target
    /// as the prompt, the rest as the response, with the weight of each response token `(T_response)`.
    static func split(_ example: MaskedSequence) -> (prompt: [Int32], response: [Int32], mask: [Float]) {
        // Target t is token t + 1; the first trained one starts the response.
        let first = example.mask.firstIndex { $0 != 0 } ?? 0
        return (Array(example.ids[...first]), Array(example.ids[(first + 1)...]), Array(example.mask[first...]))
    }
}
