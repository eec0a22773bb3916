import ClusterRuntime
import Distributed
import Foundation
import LlamaCore
import Synchronization
import Wire

/// The generator role's compute: K samples of each prompt with continuous batching over a fixed number
/// of decode slots, with the sampled ids' temperature-1 log-probabilities. `Generator` is its distributed
/// actor.
public final class GeneratorService: RoleService, @unchecked Sendable {
    private let held: VersionedModel<TextGenerator>
    private let pool: ComputePool
    private let tokens = Atomic<UInt64>(0)
    private let steps = Atomic<Int>(0)
    /// Testing aid: after this many decode steps the compute hangs (the daemon stays up).
    private let faultHangAfterSteps: Int?
    /// Sequences decoded at once: a slot whose answer ends takes the next queued sample.
    public let decodeSlots: Int
    /// What the decode slots' KV caches store.
    public let kvCache: KVCache.Precision

    /// A generator over `model` (its products in the model's precision) on `threads` threads, decoding
    /// up to `decodeSlots` sequences at once (each sample's tokens do not depend on it) with KV caches
    /// of `kvCache` precision. `faultHangAfterSteps` (tests only) makes its compute hang for good after
    /// that many decode steps.
    public init(model: LlamaModel, threads: Int = 1, decodeSlots: Int = GeneratorService.defaultDecodeSlots,
                kvCache: KVCache.Precision = .float32, policyVersion: UInt64 = 0, faultHangAfterSteps: Int? = nil) {
        self.faultHangAfterSteps = faultHangAfterSteps
        self.decodeSlots = max(1, decodeSlots)
        self.kvCache = kvCache
        pool = ComputePool(threads: threads)
        held = VersionedModel(TextGenerator(transformer: Transformer(model: model, pool: pool, kvCache: kvCache)), version: policyVersion,
                              checksum: model.weights.checksum)
    }

    /// Decode slots by default: as many rows as the batched products' panel kernels are made for.
    public static let defaultDecodeSlots = 64

    /// The policy version of the weights loaded.
    public var policyVersion: UInt64 { held.snapshot.version }
    public var weightsChecksum: UInt32 { held.snapshot.checksum }
    public var tokensProcessed: UInt64 { tokens.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { held.snapshot.model.transformer.model.config }
    public var heldWeights: ModelWeights? { held.snapshot.model.transformer.model.weights }
    /// The number format of the generator's matrix products (kept across weight installs).
    public var precision: WeightPrecision { held.snapshot.model.transformer.model.precision }

    public func install(_ weights: ModelWeights, version: UInt64) throws {
        install(weights, version: version, checksum: weights.checksum)
    }

    /// Installs the policy announced: whole weights, or LoRA adapters merged into their base (then the
    /// checksum held is the announcement's, base and adapters, as heartbeats report it).
    public func install(_ weights: ModelWeights, version: UInt64, announce: WeightAnnouncement) throws {
        guard announce.model == .policy else {
            throw LlamaError.invalidInput("weights of the \(announce.model.rawValue) were announced to a policy consumer")
        }
        install(weights, version: version, checksum: announce.modelChecksum)
    }

    private func install(_ weights: ModelWeights, version: UInt64, checksum: UInt32) {
        let current = held.snapshot.model.transformer.model
        let model = LlamaModel(weights: weights, precision: current.precision)
        let generator = TextGenerator(transformer: Transformer(model: model, pool: pool, kvCache: kvCache))
        held.replace(generator, version: version, checksum: checksum)
    }

    /// The requests a generate call stands for: prompt by prompt, sample by sample; sample `k` of a
    /// prompt uses RNG stream `k` of the request's seed mixed with the prompt id.
    public static func requests(for r: GenerateRequest) -> [GenerationRequest] {
        r.prompts.flatMap { prompt in
            (0..<max(1, r.samplesPerPrompt)).map { k in
                GenerationRequest(promptIds: prompt.tokens, maxNewTokens: r.maxNewTokens, sampling: r.sampling,
                                  seed: r.seed ^ (prompt.id &* 0x9E37_79B9_7F4A_7C15), stream: UInt64(k), stopTokens: r.stopTokens)
            }
        }
    }

    /// K samples of each prompt with their log-probabilities; refuses another policy version.
    public func generate(_ request: GenerateRequest) throws -> Samples {
        let (generator, policyVersion, _) = held.snapshot
        guard request.policyVersion == policyVersion else {
            throw LlamaError.invalidInput("policy version \(request.policyVersion) requested, this generator holds \(policyVersion)")
        }
        let start = Date()
        let results = try generator.generate(batch: GeneratorService.requests(for: request), slots: decodeSlots) { [self] produced in
            // Progress per decode step: what tells the coordinator this generator is not hung.
            self.tokens.add(UInt64(produced), ordering: .relaxed)
            if let limit = faultHangAfterSteps, steps.add(1, ordering: .relaxed).newValue >= limit {
                // Fault injection for tests: the compute stops for good while the daemon's socket and
                // heartbeats live on.
                while true { Thread.sleep(forTimeInterval: 3600) }
            }
        }
        var samples: [Samples.Sample] = []
        var index = 0
        for prompt in request.prompts {
            for k in 0..<max(1, request.samplesPerPrompt) {
                let r = results[index]
                index += 1
                samples.append(Samples.Sample(promptID: prompt.id, index: k, tokens: r.ids, finishReason: r.finishReason.rawValue,
                                              logProbs: r.logProbs))
            }
        }
        let generated = results.reduce(0) { $0 + $1.ids.count }
        return Samples(samples: samples, policyVersion: policyVersion,
                       tokensPerSecond: Double(generated) / max(1e-9, Date().timeIntervalSince(start)))
    }

    public func hostActor(on actorSystem: ClusterActorSystem, as name: String) -> any DistributedActor {
        let actor = Generator(service: self, actorSystem: actorSystem)
        actorSystem.publish(actor, as: name)
        return actor
    }
}
