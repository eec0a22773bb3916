import CBLAS
import Foundation
import LlamaCore

/// LoRA (Hu et al. 2021) as PEFT defines it: a target matrix `W (out, in)` is used as
/// `W + (alpha / rank) B A`, with `A (rank, in)` and `B (out, rank)` trained and `W` frozen; dropout
/// (when above 0) applies to the adapter's input only, in training forwards only.
public struct LoRASettings: Codable, Sendable, Equatable {
    public var rank = 8
    public var alpha = 16.0
    public var dropout = 0.0
    /// The projection matrices that get adapters (`wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3`).
    public var targets: [ParameterTensor] = [.wq, .wk, .wv, .wo]

    public init(rank: Int = 8, alpha: Double = 16, dropout: Double = 0, targets: [ParameterTensor] = [.wq, .wk, .wv, .wo]) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
    }

    /// The matrices an adapter may target.
    public static let targetable: [ParameterTensor] = [.wq, .wk, .wv, .wo, .w1, .w2, .w3]

    /// The settings' problem, or nil when they can be used.
    public func problem() -> String? {
        if !(1 ... 4096).contains(rank) { return "lora rank must be in 1...4096, got \(rank)" }
        if !alpha.isFinite || alpha <= 0 { return "lora alpha must be a number > 0, got \(alpha)" }
        if !dropout.isFinite || !(0 ..< 1).contains(dropout) { return "lora dropout must be in [0, 1), got \(dropout)" }
        if targets.isEmpty { return "lora targets name no matrix (choose from \(LoRASettings.targetable.map(\.name).joined(separator: ", ")))" }
        if let bad = targets.first(where: { !LoRASettings.targetable.contains($0) }) {
            return "lora cannot target \(bad.name) (choose from \(LoRASettings.targetable.map(\.name).joined(separator: ", ")))"
        }
        if Set(targets).count != targets.count { return "lora targets name a matrix twice" }
        return nil
    }
}

/// The adapters of one model: for each target matrix and layer, `A (rank, in)` then `B (out, rank)` in
/// one buffer (one optimizer parameter group), and their gradients laid out alike.
public final class LoRAAdapters {
    public let settings: LoRASettings
    public let config: LlamaConfig
    /// Every adapter's values, `A` then `B` per (target, layer).
    public let values: FloatBuffer
    /// `dL/dvalues`, laid out like `values`.
    public let gradients: FloatBuffer
    /// Offsets of each target's `A` and `B`, by layer.
    private let offsets: [ParameterTensor: [(a: Int, b: Int)]]
    /// `alpha / rank`.
    public var scale: Float { Float(settings.alpha / Double(settings.rank)) }
    /// The dropout masks' seed for the next training forward (each one takes the next).
    public var nextDropoutSeed: UInt64 = 1

    /// Adapters for `config` as PEFT initialises them: `A` uniform in `±1/sqrt(in)` (Kaiming-uniform with
    /// a = sqrt(5)), `B` zero, so the adapted model starts as the base model.
    public init(config: LlamaConfig, settings: LoRASettings, seed: UInt64 = 1) throws {
        if let problem = settings.problem() { throw LlamaError.invalidInput(problem) }
        self.settings = settings
        self.config = config
        var offsets: [ParameterTensor: [(a: Int, b: Int)]] = [:]
        var total = 0
        for tensor in settings.targets {
            let (out, inFeatures) = LoRAAdapters.shape(tensor, config)
            offsets[tensor] = (0..<config.nLayers).map { _ in
                defer { total += settings.rank * (inFeatures + out) }
                return (total, total + settings.rank * inFeatures)
            }
        }
        self.offsets = offsets
        values = FloatBuffer(count: total)
        gradients = FloatBuffer(count: total)
        var rng = SeededGenerator(seed: seed)
        for tensor in settings.targets {
            let inFeatures = LoRAAdapters.shape(tensor, config).in
            let bound = 1 / Double(inFeatures).squareRoot()
            for (a, _) in offsets[tensor]! {
                for i in 0..<(settings.rank * inFeatures) {
                    values.baseAddress[a + i] = Float((Double(rng.next() >> 11) / Double(1 << 53) * 2 - 1) * bound)
                }
            }
        }
    }

    /// `(out, in)` of a target matrix.
    static func shape(_ tensor: ParameterTensor, _ c: LlamaConfig) -> (out: Int, in: Int) { LlamaModel.matrixShape(tensor, c) }

    /// The `A` and `B` of `tensor` at `layer`, nil when it has no adapter.
    func adapter(_ tensor: ParameterTensor, _ layer: Int) -> (a: Int, b: Int)? { offsets[tensor]?[layer] }

    /// The trained parameters, one optimizer group.
    public var parameterGroup: ParameterGroup { ParameterGroup(values: values, gradients: gradients, ranges: [0..<values.count]) }

    public func zeroGradients() { gradients.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }

    /// `base` with every adapter merged in, `W + scale B A` (what generators sample from and what an
    /// export writes).
    public func merged(into base: ModelWeights) -> ModelWeights {
        let merged = base.copy()
        let r = settings.rank
        for tensor in settings.targets {
            let (out, inFeatures) = LoRAAdapters.shape(tensor, config)
            for (layer, (a, b)) in offsets[tensor]!.enumerated() {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(out), Int32(inFeatures), Int32(r), scale,
                            values.baseAddress + b, Int32(r), values.baseAddress + a, Int32(inFeatures), 1,
                            merged.storage.baseAddress + merged.layout.offset(tensor, layer: layer), Int32(inFeatures))
            }
        }
        return merged
    }

    /// The adapter input of a training forward with dropout: `x * keep / (1 - p)`, the keep mask a hash of
    /// (`seed`, tensor, layer, element), so that the backward pass draws the same one.
    func dropped(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int, seed: UInt64, tensor: ParameterTensor, layer: Int) {
        let p = settings.dropout
        let keepScale = Float(1 / (1 - p))
        let threshold = UInt64(p * Double(UInt64(1) << 53))
        let stream = seed ^ (UInt64(tensor.rawValue) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(layer) &* 0xC2B2_AE3D_27D4_EB4F)
        for i in 0..<count {
            var z = stream &+ UInt64(i) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            out[i] = (z >> 11) < threshold ? 0 : x[i] * keepScale
        }
    }
}
