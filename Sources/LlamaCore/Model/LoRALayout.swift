import CBLAS

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

    /// The targetable matrix named `name` (llama2.c's names: `wq` ... `w3`), nil for any other name.
    public static func target(named name: String) -> ParameterTensor? { targetable.first { $0.name == name } }

    /// `alpha / rank`, the factor of `B A`.
    public var scale: Float { Float(alpha / Double(rank)) }

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

/// Where the adapters of one model live in one buffer: for each target matrix and layer, `A (rank, in)`
/// then `B (out, rank)`. A learner trains this buffer; a weight sync sends it as the tensors
/// `layers.L.NAME.lora_A` and `layers.L.NAME.lora_B` (PEFT's names, llama2.c's matrix names); a
/// generator merges it into the base it holds.
public struct LoRALayout: Sendable, Equatable {
    public let config: LlamaConfig
    public let settings: LoRASettings
    /// Offsets of each target's `A` and `B`, by layer.
    private let offsets: [ParameterTensor: [Offsets]]
    /// Elements of every adapter together.
    public let totalCount: Int

    struct Offsets: Sendable, Equatable {
        let a: Int, b: Int
    }

    /// The layout of `settings`' adapters on a model of `config`; refuses settings with a problem.
    public init(config: LlamaConfig, settings: LoRASettings) throws {
        if let problem = settings.problem() { throw LlamaError.invalidInput(problem) }
        self.config = config
        self.settings = settings
        var offsets: [ParameterTensor: [Offsets]] = [:]
        var total = 0
        for tensor in settings.targets {
            let (out, inFeatures) = LlamaModel.matrixShape(tensor, config)
            offsets[tensor] = (0..<config.nLayers).map { _ in
                defer { total += settings.rank * (inFeatures + out) }
                return Offsets(a: total, b: total + settings.rank * inFeatures)
            }
        }
        self.offsets = offsets
        totalCount = total
    }

    /// The `A` and `B` offsets of `tensor` at `layer`, nil when it has no adapter.
    public func adapter(_ tensor: ParameterTensor, layer: Int) -> (a: Int, b: Int)? {
        offsets[tensor].map { ($0[layer].a, $0[layer].b) }
    }

    /// Every adapter as a named tensor, in buffer order.
    public var entries: [TensorSet.Entry] {
        let r = settings.rank
        return settings.targets.flatMap { tensor -> [TensorSet.Entry] in
            let (out, inFeatures) = LlamaModel.matrixShape(tensor, config)
            return offsets[tensor]!.enumerated().flatMap { layer, o in [
                TensorSet.Entry(name: "layers.\(layer).\(tensor.name).lora_A", shape: [r, inFeatures], range: o.a ..< o.a + r * inFeatures),
                TensorSet.Entry(name: "layers.\(layer).\(tensor.name).lora_B", shape: [out, r], range: o.b ..< o.b + out * r),
            ] }
        }
    }

    /// `base` with the adapters in `values` (laid out as here) merged in: every target becomes
    /// `W + scale B A`. A new copy; `base` is left as it is.
    public func merged(_ values: FloatBuffer, into base: ModelWeights) -> ModelWeights {
        let merged = base.copy()
        mergeInPlace(values, into: merged)
        return merged
    }

    /// Adds `scale B A` to every target of `weights` in place.
    func mergeInPlace(_ values: FloatBuffer, into weights: ModelWeights) {
        precondition(values.count == totalCount && weights.config == config, "adapters and model do not match")
        let r = settings.rank
        for tensor in settings.targets {
            let (out, inFeatures) = LlamaModel.matrixShape(tensor, config)
            for (layer, o) in offsets[tensor]!.enumerated() {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(out), Int32(inFeatures), Int32(r), settings.scale,
                            values.baseAddress + o.b, Int32(r), values.baseAddress + o.a, Int32(inFeatures), 1,
                            weights.storage.baseAddress + weights.layout.offset(tensor, layer: layer), Int32(inFeatures))
            }
        }
    }
}
