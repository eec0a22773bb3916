import Foundation
import LlamaCore
import Synchronization
import Wire

/// The generator role: K samples of each prompt with batched decode, answered with the sampled ids
/// and their temperature-1 log-probabilities (tensor frame "logprobs", samples back to back).
public final class Generator: RoleService, @unchecked Sendable {
    private let held: VersionedModel<TextGenerator>
    private let pool: ComputePool
    private let tokens = Atomic<UInt64>(0)
    private let steps = Atomic<Int>(0)
    /// Testing aid: after this many decode steps the compute hangs (the daemon stays up).
    private let faultHangAfterSteps: Int?

    /// A generator over `model` on `threads` threads. `faultHangAfterSteps` (tests only) makes its
    /// compute hang for good after that many decode steps.
    public init(model: LlamaModel, threads: Int = 1, policyVersion: UInt64 = 0, faultHangAfterSteps: Int? = nil) {
        self.faultHangAfterSteps = faultHangAfterSteps
        pool = ComputePool(threads: threads)
        held = VersionedModel(TextGenerator(transformer: Transformer(model: model, pool: pool)), version: policyVersion,
                              checksum: model.weights.checksum)
    }

    /// The policy version of the weights loaded.
    public var policyVersion: UInt64 { held.snapshot.version }
    public var weightsChecksum: UInt32 { held.snapshot.checksum }
    public var tokensProcessed: UInt64 { tokens.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { held.snapshot.model.transformer.model.config }

    public func install(_ weights: ModelWeights, version: UInt64) throws {
        let current = held.snapshot.model.transformer.model
        let model = LlamaModel(weights: weights, precision: current.precision)
        let generator = TextGenerator(transformer: Transformer(model: model, pool: pool))
        let checksum = weights.checksum
        held.replace(generator, version: version, checksum: checksum)
    }

    /// The requests a GENERATE_REQUEST stands for: prompt by prompt, sample by sample; sample `k` of a
    /// prompt uses RNG stream `k` of the request's seed mixed with the prompt id.
    public static func requests(for r: Rlhf_V1_GenerateRequest) -> [GenerationRequest] {
        let sampling = SamplingSettings(temperature: r.sampling.temperature, topP: r.sampling.topP == 0 ? 1 : r.sampling.topP,
                                        topK: Int(r.sampling.topK))
        return r.prompts.flatMap { prompt in
            (0..<max(1, Int(r.samplesPerPrompt))).map { k in
                GenerationRequest(promptIds: prompt.ids, maxNewTokens: Int(r.maxNewTokens), sampling: sampling,
                                  seed: r.seed ^ (prompt.promptID &* 0x9E37_79B9_7F4A_7C15), stream: UInt64(k),
                                  stopToken: r.stopToken >= 0 ? r.stopToken : nil)
            }
        }
    }

    /// Serves one GENERATE_REQUEST; refuses another policy version.
    public func handle(_ message: WireMessage) throws -> WireMessage {
        guard message.type == .generateRequest else { throw LlamaError.invalidInput("a generator serves GENERATE_REQUEST, not \(message.type)") }
        let request = try message.decodeBody(Rlhf_V1_GenerateRequest.self)
        let (generator, policyVersion, _) = held.snapshot
        guard request.policyVersion == policyVersion else {
            throw LlamaError.invalidInput("policy version \(request.policyVersion) requested, this generator holds \(policyVersion)")
        }
        let start = Date()
        let results = try generator.generate(batch: Generator.requests(for: request)) { [self] produced in
            // Progress per decode step: what tells the coordinator this generator is not hung.
            self.tokens.add(UInt64(produced), ordering: .relaxed)
            if let limit = faultHangAfterSteps, steps.add(1, ordering: .relaxed).newValue >= limit {
                // Fault injection for tests: the compute stops for good while the daemon's socket and
                // heartbeats live on.
                while true { Thread.sleep(forTimeInterval: 3600) }
            }
        }
        var reply = Rlhf_V1_GenerateResult()
        var logprobs: [Float] = []
        var index = 0
        for prompt in request.prompts {
            for k in 0..<max(1, Int(request.samplesPerPrompt)) {
                let r = results[index]
                index += 1
                var sample = Rlhf_V1_Sample()
                sample.promptID = prompt.promptID
                sample.sampleIndex = UInt32(k)
                sample.ids = r.ids
                sample.finishReason = r.finishReason.rawValue
                reply.samples.append(sample)
                logprobs += r.logProbs
            }
        }
        reply.policyVersion = policyVersion
        let generated = results.reduce(0) { $0 + $1.ids.count }
        reply.tokensPerSecond = Double(generated) / max(1e-9, Date().timeIntervalSince(start))
        return try WireMessage(type: .generateResult, requestID: message.requestID, body: reply,
                               tensors: [WireTensor(name: "logprobs", floats: logprobs)], policyVersion: policyVersion)
    }
}
