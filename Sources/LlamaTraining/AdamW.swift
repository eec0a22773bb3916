import Foundation
import LlamaCore

/// AdamW's knobs (LLaMA2's RLHF values by default: beta2 0.95, eps 1e-5, weight decay 0.1, clip 1.0).
public struct AdamWSettings: Codable, Sendable, Equatable {
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    /// Decoupled decay: `p *= 1 - lr * weightDecay` before the Adam step.
    public var weightDecay: Float
    /// Gradient clipping by global norm (`nil`: off).
    public var clipNorm: Float?

    /// Settings with the given knobs.
    public init(beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-5, weightDecay: Float = 0.1, clipNorm: Float? = 1.0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        self.clipNorm = clipNorm
    }

    /// LLaMA2's values.
    public static let `default` = AdamWSettings()
}

/// A learning-rate schedule.
public enum LearningRateSchedule: Codable, Sendable, Equatable {
    /// The same rate every step.
    case constant(Float)
    /// Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak * floor` at `total`.
    case cosine(peak: Float, warmup: Int, total: Int, floor: Float)

    /// The rate for 1-based step `step`.
    public func rate(step: Int) -> Float {
        switch self {
        case let .constant(lr): return lr
        case let .cosine(peak, warmup, total, floor):
            if warmup > 0 && step <= warmup { return peak * Float(step) / Float(warmup) }
            let span = max(1, total - warmup)
            let progress = min(1, Double(step - warmup) / Double(span))
            let cosine = 0.5 * (1 + cos(Double.pi * progress))
            return peak * (floor + (1 - floor) * Float(cosine))
        }
    }
}

/// One parameter group: a buffer and the element ranges of it that are trained.
public struct ParameterGroup {
    /// Values, updated in place.
    public let values: FloatBuffer
    /// `dL/dvalues`, same size.
    public let gradients: FloatBuffer
    /// Trained ranges.
    public let ranges: [Range<Int>]
    /// What weight decay pulls each range's values toward (0 but where the values are stored offset from
    /// the parameters a framework decays: Gemma's norm weights, which the core keeps as `1 + weight`).
    public let decayCenters: [Float]

    public init(values: FloatBuffer, gradients: FloatBuffer, ranges: [Range<Int>], decayCenters: [Float]? = nil) {
        precondition(values.count == gradients.count)
        precondition(decayCenters == nil || decayCenters!.count == ranges.count, "one decay center per range")
        self.values = values
        self.gradients = gradients
        self.ranges = ranges
        self.decayCenters = decayCenters ?? ranges.map { _ in 0 }
    }

    /// The model's trainable tensors (everything but the legacy RoPE tables); a family whose norms scale by
    /// `1 + weight` (Gemma) decays its norms' scales toward 1, as PyTorch decays its `weight` toward 0.
    public init(model: TrainableTransformer) {
        let layout = model.weights.layout, offset = model.config.normWeightOffset
        self.init(values: model.weights.storage, gradients: model.gradients,
                  ranges: layout.trainableTensors.map { layout.range($0) },
                  decayCenters: layout.trainableTensors.map { $0.isNormWeight ? offset : 0 })
    }
}

/// AdamW with PyTorch's semantics (bias-corrected moments, decoupled weight decay) over parameter
/// groups, with gradient clipping by the global norm of all groups together.
public final class AdamW {
    /// Knobs.
    public let settings: AdamWSettings
    /// Steps taken.
    public private(set) var step: Int = 0
    /// First and second moments, one buffer pair per group (same sizes as the groups' values).
    public let firstMoments: [FloatBuffer]
    public let secondMoments: [FloatBuffer]

    /// An optimizer for groups of the given sizes.
    public init(settings: AdamWSettings = .default, groupSizes: [Int]) {
        self.settings = settings
        firstMoments = groupSizes.map { FloatBuffer(count: $0) }
        secondMoments = groupSizes.map { FloatBuffer(count: $0) }
    }

    /// Restores a saved state.
    init(settings: AdamWSettings, step: Int, firstMoments: [FloatBuffer], secondMoments: [FloatBuffer]) {
        self.settings = settings
        self.step = step
        self.firstMoments = firstMoments
        self.secondMoments = secondMoments
    }

    /// Global L2 norm of the groups' gradients, accumulated in double in per-thread partial sums
    /// (added in thread order, so the result depends only on the thread count).
    public static func globalNorm(_ groups: [ParameterGroup], pool: ComputePool = .serial) -> Double {
        let threads = pool.threadCount
        var total = 0.0
        for group in groups {
            let g = group.gradients.baseAddress
            for range in group.ranges {
                var partial = [Double](repeating: 0, count: threads)
                partial.withUnsafeMutableBufferPointer { partial in
                    pool.run { t in
                        let share = ComputePool.share(of: range.count, thread: t, threads: threads, grain: 1024)
                        var sum = 0.0
                        for i in share { let x = Double(g[range.lowerBound + i]); sum += x * x }
                        partial[t] = sum
                    }
                }
                total += partial.reduce(0, +)
            }
        }
        return total.squareRoot()
    }

    /// Takes the moments and step count of `saved` (an optimizer of the same group sizes, read back
    /// from a training state).
    public func load(_ saved: AdamW) throws {
        guard saved.firstMoments.map(\.count) == firstMoments.map(\.count) else {
            throw LlamaError.invalidInput("optimizer state of group sizes \(saved.firstMoments.map(\.count)), expected \(firstMoments.map(\.count))")
        }
        step = saved.step
        for (mine, theirs) in zip(firstMoments + secondMoments, saved.firstMoments + saved.secondMoments) {
            mine.set(theirs.array(0..<theirs.count), at: 0)
        }
    }

    /// Forgets the moments and the step count: the optimizer of a fresh run.
    public func reset() {
        step = 0
        for m in firstMoments + secondMoments { m.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
    }

    /// Clips by global norm (scale `min(1, clip / (norm + 1e-6))`), then takes one AdamW step at rate
    /// `lr`, elements split over `pool`. Returns the gradient norm before clipping.
    @discardableResult
    public func update(_ groups: [ParameterGroup], lr: Float, pool: ComputePool = .serial) -> Double {
        precondition(groups.count == firstMoments.count, "one moment buffer pair per group")
        let norm = AdamW.globalNorm(groups, pool: pool)
        var scale: Float = 1
        if let clip = settings.clipNorm { scale = Float(min(1, Double(clip) / (norm + 1e-6))) }
        step += 1
        let s = settings
        let correction1 = 1 - pow(s.beta1, Float(step)), correction2 = 1 - pow(s.beta2, Float(step))
        let decay = 1 - lr * s.weightDecay
        let threads = pool.threadCount
        for (index, group) in groups.enumerated() {
            let p = group.values.baseAddress, g = group.gradients.baseAddress
            let m = firstMoments[index].baseAddress, v = secondMoments[index].baseAddress
            for (range, center) in zip(group.ranges, group.decayCenters) {
                // Decay toward a center c: p - lr wd (p - c), the decay's p (1 - lr wd) plus lr wd c.
                let pull = center == 0 ? 0 : (1 - decay) * center
                pool.run { t in
                    let share = ComputePool.share(of: range.count, thread: t, threads: threads, grain: 1024)
                    guard !share.isEmpty else { return }
                    let i = range.lowerBound + share.lowerBound
                    TrainingKernels.adamWUpdate(p + i, m + i, v + i, g + i, count: share.count, scale: scale, settings: s, lr: lr,
                                                decay: decay, correction1: correction1, correction2: correction2)
                    if pull != 0 { for j in i ..< i + share.count { p[j] += pull } }
                }
            }
        }
        return norm
    }
}
