import Foundation
import LlamaCore

/// Settings of a training run (pretraining, SFT or a reward model).
public struct TrainerSettings: Codable, Sendable, Equatable {
    /// Examples (sequences, or pairs for a reward model) per optimizer step.
    public var batchSize = 16
    /// Passes over the data (the steps follow from it unless `steps` is set).
    public var epochs = 1.0
    /// Optimizer steps; nil: `ceil(epochs * examples / batchSize)`.
    public var steps: Int?
    /// Peak learning rate.
    public var learningRate: Float = 3e-4
    /// Share of the steps spent warming up linearly to the peak.
    public var warmupFraction = 0.03
    /// Where the cosine decay ends, as a share of the peak.
    public var finalLearningRateFraction: Float = 0.1
    /// AdamW's settings.
    public var optimizer = AdamWSettings.default
    /// Seed of the data order (and of a new model's or head's initial weights).
    public var seed: UInt64 = 1
    /// Write the training state at least every this many steps ...
    public var checkpointEverySteps = 200
    /// ... and at least every this many seconds.
    public var checkpointEverySeconds = 60.0
    /// What defines the run (the command's options that shape the training: data, schedule, seed), saved
    /// in the training state so that a resume can be checked against it. Empty: nothing to check.
    public var run: [String: String] = [:]

    /// The defaults.
    public static let `default` = TrainerSettings()
    public init() {}

    /// Optimizer steps for `examples` examples.
    public func totalSteps(examples: Int) -> Int {
        steps ?? max(1, Int((epochs * Double(examples) / Double(max(1, batchSize))).rounded(.up)))
    }

    /// The learning-rate schedule over `total` steps: linear warm-up, then cosine decay.
    public func schedule(total: Int) -> LearningRateSchedule {
        .cosine(peak: learningRate, warmup: Int((warmupFraction * Double(total)).rounded()), total: total, floor: finalLearningRateFraction)
    }

    /// Checks the settings; the error names the field.
    public func validate() throws {
        guard batchSize >= 1 else { throw LlamaError.invalidInput("batch size must be at least 1, got \(batchSize)") }
        guard epochs > 0, epochs.isFinite else { throw LlamaError.invalidInput("epochs must be a positive number, got \(epochs)") }
        if let steps, steps < 1 { throw LlamaError.invalidInput("steps must be at least 1, got \(steps)") }
        guard learningRate > 0, learningRate.isFinite else { throw LlamaError.invalidInput("learning rate must be a positive number, got \(learningRate)") }
        guard (0..<1).contains(warmupFraction) else { throw LlamaError.invalidInput("warm-up fraction must be in [0, 1), got \(warmupFraction)") }
    }
}

/// Where a run stands after one step: what the progress line and the metrics file show.
public struct TrainingProgress: Sendable, Codable {
    public var step: Int
    public var totalSteps: Int
    public var loss: Double
    public var learningRate: Float
    public var gradNorm: Double
    /// Tokens the step trained on (forward and backward).
    public var tokens: Int
    /// Tokens per second since this process started training.
    public var tokensPerSecond: Double
    public var elapsedSeconds: Double
    /// Seconds left at the current rate.
    public var etaSeconds: Double
    /// Epoch (fractional) reached.
    public var epoch: Double
}

/// How a run ended.
public enum TrainingOutcome: Equatable, Sendable {
    /// Every step done.
    case finished
    /// Stopped at a step boundary on request (Ctrl-C); the state to resume from is written.
    case interrupted(step: Int)
}

/// The loop every trainer runs: examples in a seeded order, one optimizer step per batch on a cosine
/// schedule, the training state written atomically every so often and when stopped, so that a run
/// killed or interrupted resumes where its last state left it (same data order, same optimizer moments).
public final class TrainingLoop {
    /// The model trained.
    public let model: TrainableTransformer
    /// The optimizer (its groups: the model's, then `extraGroups`).
    public let optimizer: AdamW
    /// Further parameters trained with the model (a reward model's head).
    public let extraGroups: [ParameterGroup]
    public let settings: TrainerSettings
    /// Examples in the data.
    public let exampleCount: Int
    /// Where the training state is written.
    public let statePath: String
    /// First step to run (1-based) and the data cursor there.
    public private(set) var step: Int
    public private(set) var dataPosition: Int
    /// Scalar heads saved with the state (filled by the caller before each save).
    public var heads: () -> [String: ScalarHead] = { [:] }

    /// A loop starting fresh on `model`, or from `resume` (a state read from `statePath`).
    public init(model: TrainableTransformer, extraGroups: [ParameterGroup] = [], settings: TrainerSettings,
                exampleCount: Int, statePath: String, resume: TrainingState? = nil) throws {
        try settings.validate()
        guard exampleCount > 0 else { throw LlamaError.invalidInput("no training examples") }
        self.model = model
        self.extraGroups = extraGroups
        self.settings = settings
        self.exampleCount = exampleCount
        self.statePath = statePath
        if let resume {
            optimizer = resume.optimizer
            step = resume.step
            dataPosition = resume.dataPosition
            guard optimizer.firstMoments.map(\.count) == [model.weights.storage.count] + extraGroups.map(\.values.count) else {
                throw LlamaError.invalidInput("the training state at \(statePath) was written for other parameters (another model or objective)")
            }
        } else {
            optimizer = AdamW(settings: settings.optimizer, groupSizes: [model.weights.storage.count] + extraGroups.map(\.values.count))
            step = 0
            dataPosition = 0
        }
    }

    /// The order of the examples in `epoch`: a seeded shuffle, the same on every run.
    func order(epoch: Int) -> [Int] {
        var rng = SeededGenerator(seed: settings.seed, stream: UInt64(epoch) + 1)
        var order = Array(0..<exampleCount)
        rng.shuffle(&order)
        return order
    }

    /// Writes the training state now.
    public func saveState() throws {
        try TrainingState(weights: model.weights, optimizer: optimizer, step: step, rng: SeededGenerator(seed: settings.seed),
                          dataPosition: dataPosition, heads: heads(), run: settings.run).write(to: statePath)
    }

    /// Runs the remaining steps. `lossAndGradients` gets a batch of example indices, must add the
    /// gradients of the model (and extra groups) and returns the loss and the tokens trained on;
    /// `progress` hears of each step; `shouldStop` is asked after each step.
    public func run(lossAndGradients: ([Int]) throws -> (loss: Double, tokens: Int), progress: (TrainingProgress) -> Void,
                    shouldStop: () -> Bool = { false }) throws -> TrainingOutcome {
        let total = settings.totalSteps(examples: exampleCount)
        let schedule = settings.schedule(total: total)
        let started = Date()
        var lastSave = Date(), tokensSeen = 0, stepsHere = 0
        var cached: (epoch: Int, order: [Int])?
        while step < total {
            var batch: [Int] = []
            for _ in 0..<settings.batchSize {
                let epoch = dataPosition / exampleCount
                if cached?.epoch != epoch { cached = (epoch, order(epoch: epoch)) }
                batch.append(cached!.order[dataPosition % exampleCount])
                dataPosition += 1
            }
            model.zeroGradients()
            for group in extraGroups { group.gradients.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
            let (loss, tokens) = try lossAndGradients(batch)
            guard loss.isFinite else {
                throw LlamaError.invalidInput("the loss is \(loss) at step \(step + 1): lower the learning rate (the state of step \(step) is kept)")
            }
            step += 1
            let lr = schedule.rate(step: step)
            let norm = optimizer.update([ParameterGroup(model: model)] + extraGroups, lr: lr, pool: model.pool)
            tokensSeen += tokens
            stepsHere += 1
            let elapsed = Date().timeIntervalSince(started)
            let rate = Double(tokensSeen) / max(elapsed, 1e-9)
            progress(TrainingProgress(step: step, totalSteps: total, loss: loss, learningRate: lr, gradNorm: norm, tokens: tokens,
                                      tokensPerSecond: rate, elapsedSeconds: elapsed,
                                      etaSeconds: elapsed / Double(stepsHere) * Double(total - step),
                                      epoch: Double(dataPosition) / Double(exampleCount)))
            if step == total { break }
            if shouldStop() {
                try saveState()
                return .interrupted(step: step)
            }
            if step % settings.checkpointEverySteps == 0 || Date().timeIntervalSince(lastSave) >= settings.checkpointEverySeconds {
                try saveState()
                lastSave = Date()
            }
        }
        try saveState()
        return .finished
    }
}
