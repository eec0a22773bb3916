import Foundation
import LlamaCore

/// The adapters of one model: for each target matrix and layer, `A (rank, in)` then `B (out, rank)` in
/// one buffer (one optimizer parameter group), and their gradients laid out alike.
public final class LoRAAdapters {
    public let settings: LoRASettings
    public let config: LlamaConfig
    /// Where each adapter lies in `values` (and what a weight sync names it).
    public let layout: LoRALayout
    /// Every adapter's values, `A` then `B` per (target, layer).
    public let values: FloatBuffer
    /// `dL/dvalues`, laid out like `values`.
    public let gradients: FloatBuffer
    /// `alpha / rank`.
    public var scale: Float { settings.scale }
    /// The dropout masks' seed for the next training forward (each one takes the next).
    public var nextDropoutSeed: UInt64 = 1

    /// Adapters for `config` as PEFT initialises them: `A` uniform in `±1/sqrt(in)` (Kaiming-uniform with
    /// a = sqrt(5)), `B` zero, so the adapted model starts as the base model.
    public init(config: LlamaConfig, settings: LoRASettings, seed: UInt64 = 1) throws {
        self.settings = settings
        self.config = config
        layout = try LoRALayout(config: config, settings: settings)
        values = FloatBuffer(count: layout.totalCount)
        gradients = FloatBuffer(count: layout.totalCount)
        reset(seed: seed)
    }

    /// Starts the adapters again as `init(config:settings:seed:)` does: `A` drawn from `seed`, `B` zero.
    public func reset(seed: UInt64) {
        values.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        var rng = SeededGenerator(seed: seed)
        for tensor in settings.targets {
            let inFeatures = LoRAAdapters.shape(tensor, config).in
            let bound = 1 / Double(inFeatures).squareRoot()
            for layer in 0..<config.nLayers {
                let a = layout.adapter(tensor, layer: layer)!.a
                for i in 0..<(settings.rank * inFeatures) {
                    values.baseAddress[a + i] = Float((Double(rng.next() >> 11) / Double(1 << 53) * 2 - 1) * bound)
                }
            }
        }
    }

    /// The adapters as the named tensors a weight sync sends.
    public var tensorSet: TensorSet { TensorSet(storage: values, entries: layout.entries) }

    /// `(out, in)` of a target matrix.
    static func shape(_ tensor: ParameterTensor, _ c: LlamaConfig) -> (out: Int, in: Int) { LlamaModel.matrixShape(tensor, c) }

    /// The `A` and `B` of `tensor` at `layer`, nil when it has no adapter.
    func adapter(_ tensor: ParameterTensor, _ layer: Int) -> (a: Int, b: Int)? { layout.adapter(tensor, layer: layer) }

    /// The trained parameters, one optimizer group.
    public var parameterGroup: ParameterGroup { ParameterGroup(values: values, gradients: gradients, ranges: [0..<values.count]) }

    public func zeroGradients() { gradients.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }

    /// `base` with every adapter merged in, `W + scale B A` (what generators sample from and what an
    /// export writes).
    public func merged(into base: ModelWeights) -> ModelWeights { layout.merged(values, into: base) }

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
