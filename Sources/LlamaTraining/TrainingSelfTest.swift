import Foundation
import LlamaCore

/// Parity checks of the training core against the training fixtures (PyTorch, float64): SFT loss and
/// gradient, one AdamW step, reward-model scores/loss/gradients, PPO loss/clip fraction/new
/// log-probabilities/gradient, GRPO and Dr. GRPO losses (with the k3 KL penalty)/gradients, DPO, IPO
/// and conservative DPO losses/gradients. Tolerances from the fixtures' README: losses within 1e-4 of the loss's
/// scale, max(|loss|, mean absolute per-token term) (a PPO loss is a sum of terms of size ~1 that nearly
/// cancel: its error relative to |loss| alone says nothing), gradients 1e-3 relative to each tensor's
/// largest entry.
public enum TrainingSelfTest {
    struct SFTFixture: Decodable {
        let tokens: [[Int32]]
        let loss_mask: [[Float]]
        let loss: Double
    }

    struct AdamWFixture: Decodable {
        let lr: Float, beta1: Float, beta2: Float, eps: Float, weight_decay: Float, clip_global_norm: Float
        let grad_global_norm: Double
    }

    struct RMFixture: Decodable {
        let head_weight: [Float]
        let head_bias: Float
        let chosen: [[Int32]], chosen_lengths: [Int]
        let rejected: [[Int32]], rejected_lengths: [Int]
        let levels: [String]
        let margins: String
        let chosen_scores: [Double], rejected_scores: [Double]
        let loss: Double
        let head_weight_grad: [Double]
        let head_bias_grad: Double
    }

    struct PPOFixture: Decodable {
        let tokens: [[Int32]]
        let response_mask: [[Float]]
        let old_logprobs: [[Float]]
        let advantages: [[Float]]
        let clip: Double
        let loss: Double
        let clip_fraction: Double
        let new_logprobs: [[Double]]
    }

    struct GroupFixture: Decodable {
        struct Loss: Decodable {
            let loss: Double
            let per_token_terms: [[Double]]
        }
        let tokens: [[Int32]]
        let response_mask: [[Float]]
        let group_size: Int
        let rewards: [Double]
        let old_logprobs: [[Float]]
        let ref_logprobs: [[Float]]
        let clip: Double, beta: Double, std_eps: Double
        let advantages: [String: [Double]]
        let grpo: Loss, dr_grpo: Loss
        let grpo_token_aggregation_loss: Double
        let new_logprobs: [[Double]]
        let kl_k3_mean: Double
        let clip_fraction: Double

        /// A sequence's advantage on each of its targets `(B, T-1)`.
        func spread(_ kind: String) -> [[Float]] {
            tokens.indices.map { b in [Float](repeating: Float(advantages[kind]![b]), count: tokens[b].count - 1) }
        }

        /// The mean absolute per-token term of a loss (its scale).
        func termScale(_ loss: Loss) -> Double {
            var sum = 0.0, count = 0.0
            for (b, row) in loss.per_token_terms.enumerated() {
                for (t, x) in row.enumerated() where response_mask[b][t] != 0 {
                    sum += abs(x)
                    count += 1
                }
            }
            return count > 0 ? sum / count : 0
        }
    }

    struct PreferenceFixture: Decodable {
        let chosen: [[Int32]], rejected: [[Int32]]
        let chosen_mask: [[Float]], rejected_mask: [[Float]]
        let ref_chosen_logprob: [Double], ref_rejected_logprob: [Double]
        let beta: Double, label_smoothing: Double
        let loss_sigmoid: Double, loss_ipo: Double, loss_cdpo: Double
        let chosen_logprob: [Double], rejected_logprob: [Double]
        let chosen_reward: [Double], rejected_reward: [Double]
    }

    static let lossTolerance = 1e-4, gradientTolerance = 1e-3

    /// Runs the checks of every model NAME in `directory` that has training fixtures. With `.bfloat16`,
    /// the SFT loss and gradient of bfloat16 products are reported as information (how far they move
    /// from the float64 reference), not held to the float32 tolerances.
    public static func run(directory: String, precision: WeightPrecision = .float32,
                           report: (SelfTest.Check) -> Void = { _ in }) throws -> [SelfTest.Check] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let names = files.filter { $0.hasSuffix(".sft.json") }.map { String($0.dropLast(".sft.json".count)) }
            .filter { files.contains($0 + ".bin") }.sorted()
        var checks: [SelfTest.Check] = []
        for name in names {
            let base = (directory as NSString).appendingPathComponent(name)
            for check in try runModel(name: name, base: base, files: files, precision: precision) {
                report(check)
                checks.append(check)
            }
        }
        return checks
    }

    static func relative(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-12) }

    /// The error of a loss on its scale: `|ours - reference| / max(|reference|, termScale)`, where
    /// `termScale` is the mean absolute per-token (or per-pair) term. For losses whose terms are all
    /// positive (cross-entropy, ranking) the scale is |loss| itself.
    static func lossError(_ ours: Double, _ reference: Double, termScale: Double = 0) -> Double {
        abs(ours - reference) / max(abs(reference), termScale, 1e-12)
    }

    /// The mean absolute per-token term of a PPO fixture's loss, from the reference's own log-probabilities:
    /// `|-min(r A, clip(r, 1-c, 1+c) A)|` over the response tokens, `r = exp(new - old)`.
    static func ppoTermScale(_ ppo: PPOFixture) -> Double {
        var sum = 0.0, count = 0.0
        for (b, row) in ppo.new_logprobs.enumerated() {
            for (t, new) in row.enumerated() where ppo.response_mask[b][t] != 0 {
                let ratio = exp(new - Double(ppo.old_logprobs[b][t])), advantage = Double(ppo.advantages[b][t])
                let clipped = min(max(ratio, 1 - ppo.clip), 1 + ppo.clip)
                sum += abs(-min(ratio * advantage, clipped * advantage))
                count += 1
            }
        }
        return count > 0 ? sum / count : 0
    }

    /// Largest `|ours - reference|` over the tensors of `reference`, relative to each tensor's largest
    /// reference entry; names the worst tensor.
    static func gradientError(_ ours: ModelWeights, _ reference: ModelWeights) -> (Double, String) {
        var worst = 0.0, worstName = ""
        for tensor in reference.layout.trainableTensors {
            let ref = reference.values(tensor), mine = ours.values(tensor)
            guard ref.count == mine.count else { return (.infinity, "\(tensor.name): shape differs") }
            let scale = Double(ref.map { abs($0) }.max() ?? 0)
            var err = 0.0
            for i in ref.indices { err = max(err, Double(abs(mine[i] - ref[i]))) }
            let relativeError = scale > 0 ? err / scale : err
            if relativeError > worst { worst = relativeError; worstName = tensor.name }
        }
        return (worst, worstName)
    }

    static func runModel(name: String, base: String, files: [String], precision: WeightPrecision = .float32) throws -> [SelfTest.Check] {
        var checks: [SelfTest.Check] = []
        let model = try Checkpoint.read(path: base + ".bin").weights

        // SFT: loss and gradient.
        let sft = try SelfTest.loadJSON(SFTFixture.self, path: base + ".sft.json")
        let trainer = TrainableTransformer(weights: model.copy(), precision: precision)
        let loss = try trainer.maskedCrossEntropy(sequences: sft.tokens, mask: sft.loss_mask)
        checks.append(.init(name: "\(name): SFT loss", passed: lossError(loss, sft.loss) <= lossTolerance,
                            maxError: lossError(loss, sft.loss), tolerance: lossTolerance, detail: "loss \(loss)"))
        let sftGrad = try Checkpoint.read(path: base + ".sft-grad.bin").weights
        let ours = ModelWeights(config: trainer.config, storage: trainer.gradients)
        let (gErr, gName) = gradientError(ours, sftGrad)
        checks.append(.init(name: "\(name): SFT gradient", passed: gErr <= gradientTolerance, maxError: gErr,
                            tolerance: gradientTolerance, detail: "worst tensor \(gName)"))
        if precision == .bfloat16 {
            return checks.map { check in
                var info = check
                info.name += " [bfloat16]"
                info.informational = true
                info.passed = true
                return info
            }
        }

        // One AdamW step on that gradient.
        if files.contains(name + ".adamw-step.json") {
            let fixture = try SelfTest.loadJSON(AdamWFixture.self, path: base + ".adamw-step.json")
            let optimizer = AdamW(settings: AdamWSettings(beta1: fixture.beta1, beta2: fixture.beta2, eps: fixture.eps,
                                                          weightDecay: fixture.weight_decay, clipNorm: fixture.clip_global_norm),
                                  groupSizes: [trainer.weights.storage.count])
            let norm = optimizer.update([ParameterGroup(model: trainer)], lr: fixture.lr)
            checks.append(.init(name: "\(name): gradient global norm", passed: relative(norm, fixture.grad_global_norm) <= lossTolerance,
                                maxError: relative(norm, fixture.grad_global_norm), tolerance: lossTolerance))
            let expected = try Checkpoint.read(path: base + ".adamw-step.bin").weights
            let (wErr, wName) = gradientError(trainer.weights, expected)
            checks.append(.init(name: "\(name): weights after one AdamW step", passed: wErr <= gradientTolerance,
                                maxError: wErr, tolerance: gradientTolerance, detail: "worst tensor \(wName)"))
        }

        // Reward model.
        if files.contains(name + ".rm.json") {
            let rm = try SelfTest.loadJSON(RMFixture.self, path: base + ".rm.json")
            guard let table = MarginTable(rawValue: String(rm.margins.prefix { $0 != ":" })) else {
                throw LlamaError.io(path: base + ".rm.json", reason: "unknown margin table \(rm.margins)")
            }
            let levels = try rm.levels.map { level -> PreferenceLevel in
                guard let l = PreferenceLevel(rawValue: level) else {
                    throw LlamaError.io(path: base + ".rm.json", reason: "unknown preference level \(level)")
                }
                return l
            }
            let rmTrainer = TrainableTransformer(weights: model.copy())
            let chosen = zip(rm.chosen, rm.chosen_lengths).map { Array($0.prefix($1)) }
            let rejected = zip(rm.rejected, rm.rejected_lengths).map { Array($0.prefix($1)) }
            let result = try rmTrainer.rankingLoss(chosen: chosen, rejected: rejected, margins: levels.map(table.margin),
                                                   head: ScalarHead(weight: rm.head_weight, bias: rm.head_bias))
            let scoreErr = zip(result.chosenScores + result.rejectedScores, rm.chosen_scores + rm.rejected_scores)
                .map { abs(Double($0) - $1) }.max()!
            checks.append(.init(name: "\(name): reward scores", passed: scoreErr <= 1e-3, maxError: scoreErr, tolerance: 1e-3))
            checks.append(.init(name: "\(name): ranking loss", passed: lossError(result.loss, rm.loss) <= lossTolerance,
                                maxError: lossError(result.loss, rm.loss), tolerance: lossTolerance))
            let headScale = rm.head_weight_grad.map(abs).max()!
            let headErr = max(zip(result.dHeadWeight, rm.head_weight_grad).map { abs(Double($0) - $1) }.max()! / headScale,
                              abs(Double(result.dHeadBias) - rm.head_bias_grad) / headScale)
            checks.append(.init(name: "\(name): reward head gradient", passed: headErr <= gradientTolerance,
                                maxError: headErr, tolerance: gradientTolerance))
            let rmGrad = try Checkpoint.read(path: base + ".rm-grad.bin").weights
            let (rErr, rName) = gradientError(ModelWeights(config: rmTrainer.config, storage: rmTrainer.gradients), rmGrad)
            checks.append(.init(name: "\(name): reward trunk gradient", passed: rErr <= gradientTolerance, maxError: rErr,
                                tolerance: gradientTolerance, detail: "worst tensor \(rName)"))
        }

        // PPO policy loss.
        if files.contains(name + ".ppo.json") {
            let ppo = try SelfTest.loadJSON(PPOFixture.self, path: base + ".ppo.json")
            let ppoTrainer = TrainableTransformer(weights: model.copy())
            let stats = try ppoTrainer.ppoPolicyLoss(sequences: ppo.tokens, responseMask: ppo.response_mask,
                                                     oldLogProbs: ppo.old_logprobs, advantages: ppo.advantages, clip: ppo.clip)
            let ppoError = lossError(stats.loss, ppo.loss, termScale: ppoTermScale(ppo))
            checks.append(.init(name: "\(name): PPO loss", passed: ppoError <= lossTolerance, maxError: ppoError, tolerance: lossTolerance))
            let clipErr = abs(stats.clipFraction - ppo.clip_fraction)
            checks.append(.init(name: "\(name): PPO clip fraction", passed: clipErr < 1e-9, maxError: clipErr, tolerance: 0,
                                detail: "\(stats.clipFraction)"))
            var lpErr = 0.0
            for (b, row) in ppo.new_logprobs.enumerated() {
                for (t, v) in row.enumerated() where ppo.response_mask[b][t] != 0 {
                    lpErr = max(lpErr, abs(Double(stats.newLogProbs[b][t]) - v))
                }
            }
            checks.append(.init(name: "\(name): PPO new log-probabilities", passed: lpErr <= 1e-3, maxError: lpErr, tolerance: 1e-3))
            let ppoGrad = try Checkpoint.read(path: base + ".ppo-grad.bin").weights
            let (pErr, pName) = gradientError(ModelWeights(config: ppoTrainer.config, storage: ppoTrainer.gradients), ppoGrad)
            checks.append(.init(name: "\(name): PPO gradient", passed: pErr <= gradientTolerance, maxError: pErr,
                                tolerance: gradientTolerance, detail: "worst tensor \(pName)"))
        }
        if files.contains(name + ".grpo.json") { checks += try groupChecks(name: name, base: base, model: model) }
        if files.contains(name + ".dpo.json") { checks += try preferenceChecks(name: name, base: base, model: model) }
        return checks
    }

    /// GRPO's loss (per-sequence and per-token aggregation) and Dr. GRPO's, with the KL penalty in the loss;
    /// the new log-probabilities, the k3 KL and the clip fraction; both gradients.
    static func groupChecks(name: String, base: String, model: ModelWeights) throws -> [SelfTest.Check] {
        var checks: [SelfTest.Check] = []
        let g = try SelfTest.loadJSON(GroupFixture.self, path: base + ".grpo.json")
        func loss(_ aggregation: LossAggregation, _ kind: String) throws -> (PPOPolicyStats, TrainableTransformer) {
            let trainer = TrainableTransformer(weights: model.copy())
            let stats = try trainer.groupPolicyLoss(sequences: g.tokens, responseMask: g.response_mask, oldLogProbs: g.old_logprobs,
                                                    advantages: g.spread(kind), referenceLogProbs: g.ref_logprobs, beta: g.beta, clip: g.clip,
                                                    aggregation: aggregation)
            return (stats, trainer)
        }
        func lossCheck(_ label: String, _ ours: Double, _ reference: Double, scale: Double) {
            let error = lossError(ours, reference, termScale: scale)
            checks.append(.init(name: "\(name): \(label)", passed: error <= lossTolerance, maxError: error, tolerance: lossTolerance, detail: "loss \(ours)"))
        }
        func gradientCheck(_ label: String, _ trainer: TrainableTransformer, _ file: String) throws {
            let reference = try Checkpoint.read(path: base + file).weights
            let (error, tensor) = gradientError(ModelWeights(config: trainer.config, storage: trainer.gradients), reference)
            checks.append(.init(name: "\(name): \(label)", passed: error <= gradientTolerance, maxError: error, tolerance: gradientTolerance,
                                detail: "worst tensor \(tensor)"))
        }
        let (grpo, grpoTrainer) = try loss(.sequence, "grpo")
        lossCheck("GRPO loss", grpo.loss, g.grpo.loss, scale: g.termScale(g.grpo))
        let (tokenLevel, _) = try loss(.token, "grpo")
        lossCheck("GRPO loss, token aggregation", tokenLevel.loss, g.grpo_token_aggregation_loss, scale: g.termScale(g.grpo))
        let longest = Int(g.response_mask.map { $0.reduce(0, +) }.max() ?? 0)
        let (dr, drTrainer) = try loss(.constant(longest), "dr_grpo")
        lossCheck("Dr. GRPO loss", dr.loss, g.dr_grpo.loss, scale: g.termScale(g.dr_grpo))
        var lpErr = 0.0
        for (b, row) in g.new_logprobs.enumerated() {
            for (t, v) in row.enumerated() where g.response_mask[b][t] != 0 { lpErr = max(lpErr, abs(Double(grpo.newLogProbs[b][t]) - v)) }
        }
        checks.append(.init(name: "\(name): GRPO new log-probabilities", passed: lpErr <= 1e-3, maxError: lpErr, tolerance: 1e-3))
        let klErr = relative(grpo.referenceKL, g.kl_k3_mean)
        checks.append(.init(name: "\(name): GRPO k3 KL to the reference", passed: klErr <= 1e-3, maxError: klErr, tolerance: 1e-3,
                            detail: "\(grpo.referenceKL)"))
        let clipErr = abs(grpo.clipFraction - g.clip_fraction)
        checks.append(.init(name: "\(name): GRPO clip fraction", passed: clipErr < 1e-9, maxError: clipErr, tolerance: 0, detail: "\(grpo.clipFraction)"))
        try gradientCheck("GRPO gradient", grpoTrainer, ".grpo-grad.bin")
        try gradientCheck("Dr. GRPO gradient", drTrainer, ".dr-grpo-grad.bin")
        return checks
    }

    /// DPO's sigmoid loss, IPO's and conservative DPO's; the sequence log-probabilities and implicit
    /// rewards; the DPO and IPO gradients.
    static func preferenceChecks(name: String, base: String, model: ModelWeights) throws -> [SelfTest.Check] {
        var checks: [SelfTest.Check] = []
        let f = try SelfTest.loadJSON(PreferenceFixture.self, path: base + ".dpo.json")
        func run(_ objective: PreferenceObjective, smoothing: Double = 0) throws -> (PreferenceStats, TrainableTransformer) {
            let trainer = TrainableTransformer(weights: model.copy())
            let stats = try trainer.directPreferenceLoss(chosen: f.chosen, rejected: f.rejected, chosenMask: f.chosen_mask, rejectedMask: f.rejected_mask,
                                                         referenceChosen: f.ref_chosen_logprob, referenceRejected: f.ref_rejected_logprob,
                                                         beta: f.beta, objective: objective, labelSmoothing: smoothing)
            return (stats, trainer)
        }
        let (dpo, dpoTrainer) = try run(.sigmoid)
        let lpErr = zip(dpo.chosenLogProbs + dpo.rejectedLogProbs, f.chosen_logprob + f.rejected_logprob).map { abs($0 - $1) }.max()!
        checks.append(.init(name: "\(name): DPO sequence log-probabilities", passed: lpErr <= 1e-3, maxError: lpErr, tolerance: 1e-3))
        let rewardErr = zip(dpo.chosenRewards + dpo.rejectedRewards, f.chosen_reward + f.rejected_reward).map { abs($0 - $1) }.max()!
        checks.append(.init(name: "\(name): DPO implicit rewards", passed: rewardErr <= 1e-4, maxError: rewardErr, tolerance: 1e-4))
        for (label, ours, reference) in [("DPO loss", dpo.loss, f.loss_sigmoid), ("IPO loss", try run(.ipo).0.loss, f.loss_ipo),
                                         ("conservative DPO loss", try run(.sigmoid, smoothing: f.label_smoothing).0.loss, f.loss_cdpo)] {
            let error = lossError(ours, reference)
            checks.append(.init(name: "\(name): \(label)", passed: error <= lossTolerance, maxError: error, tolerance: lossTolerance, detail: "loss \(ours)"))
        }
        for (label, trainer, file) in [("DPO gradient", dpoTrainer, ".dpo-grad.bin"), ("IPO gradient", try run(.ipo).1, ".ipo-grad.bin")] {
            let (error, tensor) = gradientError(ModelWeights(config: trainer.config, storage: trainer.gradients),
                                                try Checkpoint.read(path: base + file).weights)
            checks.append(.init(name: "\(name): \(label)", passed: error <= gradientTolerance, maxError: error, tolerance: gradientTolerance,
                                detail: "worst tensor \(tensor)"))
        }
        return checks
    }
}
