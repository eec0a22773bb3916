import Foundation
import Testing
import TestKit
@testable import LlamaCore
@testable import LlamaTraining

/// LoRA adapters: gradients against finite differences, the frozen base, merging, dropout and settings.
@Suite struct LoRATests {
    static let targets: [ParameterTensor] = [.wq, .wk, .wv, .wo, .w1, .w2, .w3]

    /// A trainer of the gradient-check model with adapters on `targets`, their B random (B starts at
    /// zero, which would leave A's gradient zero).
    static func trainer(dropout: Double = 0, targets: [ParameterTensor] = LoRATests.targets) throws -> TrainableTransformer {
        let trainer = TrainableTransformer(weights: GradientCheckTests.model(shared: false))
        let lora = try LoRAAdapters(config: trainer.config, settings: LoRASettings(rank: 3, alpha: 6, dropout: dropout, targets: targets), seed: 5)
        var rng = SeededGenerator(seed: 9)
        for i in 0..<lora.values.count where lora.values.baseAddress[i] == 0 { lora.values.baseAddress[i] = Float(rng.nextGaussian() * 0.3) }
        trainer.lora = lora
        return trainer
    }

    static let mask = GradientCheckTests.sequences.map { s in (0..<(s.count - 1)).map { $0 == 0 ? Float(0) : 1 } }

    /// The largest gradients of every adapter's A and B against central differences, with and without
    /// dropout (the same masks in every evaluation: the seed is set before each).
    @Test(arguments: [0.0, 0.3])
    func adapterGradientsMatchFiniteDifferences(dropout: Double) throws {
        let trainer = try LoRATests.trainer(dropout: dropout)
        let lora = try #require(trainer.lora)
        func loss() throws -> Double {
            lora.nextDropoutSeed = 42
            lora.zeroGradients()
            trainer.zeroGradients()
            return try trainer.maskedCrossEntropy(sequences: GradientCheckTests.sequences, mask: LoRATests.mask)
        }
        _ = try loss()
        let analytic = (0..<lora.gradients.count).map { Double(lora.gradients.baseAddress[$0]) }
        // The two largest gradients of every A and every B.
        var picks: [Int] = []
        for tensor in LoRATests.targets {
            let (out, inFeatures) = LoRAAdapters.shape(tensor, trainer.config)
            for l in 0..<trainer.config.nLayers {
                let (a, b) = try #require(lora.adapter(tensor, l))
                for block in [a ..< a + 3 * inFeatures, b ..< b + out * 3] {
                    picks += block.sorted { abs(analytic[$0]) > abs(analytic[$1]) }.prefix(2)
                }
            }
        }
        let eps: Float = 3e-3
        for i in picks {
            let numeric = try GradientCheckTests.centralDifference(at: lora.values.baseAddress + i, eps: eps, loss: loss)
            let error = abs(numeric - analytic[i]) / max(abs(analytic[i]), abs(numeric), 1e-3)
            #expect(error < 1e-2, "adapter value \(i): analytic \(analytic[i]), numeric \(numeric)")
        }
        // The base is frozen: no gradient for its matrices, the classifier included.
        _ = try loss()
        for tensor in [ParameterTensor.wq, .w2, .classifier] {
            #expect(trainer.weights.layout.range(tensor).allSatisfy { trainer.gradients.baseAddress[$0] == 0 }, "\(tensor.name)")
        }
    }

    /// The adapted model computes what the base with the adapters merged in computes (without dropout,
    /// and in a forward that is not a training one with it).
    @Test func theAdaptedModelIsTheMergedModel() throws {
        let trainer = try LoRATests.trainer(dropout: 0.5)
        let merged = TrainableTransformer(weights: trainer.lora!.merged(into: trainer.weights))
        let a = try trainer.tokenLogProbs(sequences: GradientCheckTests.sequences)
        let b = try merged.tokenLogProbs(sequences: GradientCheckTests.sequences)
        for (x, y) in zip(a.joined(), b.joined()) { #expect(abs(x - y) < 1e-4, "\(x) vs \(y)") }
        // A fresh adapter (B zero) leaves the model as it was.
        let fresh = try LoRAAdapters(config: trainer.config, settings: LoRASettings(), seed: 1)
        #expect(fresh.merged(into: trainer.weights).storage.array(0..<trainer.weights.storage.count)
                == trainer.weights.storage.array(0..<trainer.weights.storage.count))
    }

    /// Dropout draws new masks each training forward and none in a forward without gradients.
    @Test func dropoutAppliesToTrainingForwardsOnly() throws {
        let trainer = try LoRATests.trainer(dropout: 0.5)
        let first = try trainer.maskedCrossEntropy(sequences: GradientCheckTests.sequences, mask: LoRATests.mask)
        let second = try trainer.maskedCrossEntropy(sequences: GradientCheckTests.sequences, mask: LoRATests.mask)
        #expect(first != second)
        let eval1 = try trainer.tokenLogProbs(sequences: GradientCheckTests.sequences)
        let eval2 = try trainer.tokenLogProbs(sequences: GradientCheckTests.sequences)
        #expect(eval1 == eval2)
    }

    @Test func badSettingsAreRefusedByName() {
        let c = GradientCheckTests.config(shared: false)
        for (settings, words) in [(LoRASettings(rank: 0), "rank"), (LoRASettings(alpha: -1), "alpha"), (LoRASettings(dropout: 1), "dropout"),
                                  (LoRASettings(targets: []), "targets"), (LoRASettings(targets: [.tokenEmbedding]), "cannot target tok_embeddings"),
                                  (LoRASettings(targets: [.wq, .wq]), "twice")] {
            #expect { _ = try LoRAAdapters(config: c, settings: settings) } throws: { "\($0)".contains(words) }
        }
        // Rank 8 on the 110M shape's attention: 2.4M trained values against 85M in the matrices.
        let adapters = try? LoRAAdapters(config: .llama110M, settings: LoRASettings())
        #expect(adapters?.values.count == 12 * 4 * 8 * (768 + 768))
    }

    /// A state with adapters reads back the same adapters, merges them for an export, and a file cut
    /// short or a header whose adapter count disagrees with its settings is refused by name.
    @Test func aStateKeepsItsAdaptersAndRefusesBrokenOnes() throws {
        let trainer = try LoRATests.trainer()
        let lora = try #require(trainer.lora)
        let state = TrainingState(weights: trainer.weights, optimizer: AdamW(groupSizes: [lora.values.count]), step: 3,
                                  rng: SeededGenerator(seed: 1), dataPosition: 0, lora: (lora.settings, lora.values))
        let dir = TestKit.scratch("lora-state")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/policy.state"
        try state.write(to: path)
        #expect(TrainingState.isStateFile(path) && !TrainingState.isStateFile(dir + "/missing"))
        let read = try TrainingState.read(path: path)
        #expect(read.lora?.settings == lora.settings && read.lora?.values.array(0..<lora.values.count) == lora.values.array(0..<lora.values.count))
        #expect(read.mergedWeights.checksum == lora.merged(into: trainer.weights).checksum && read.weights.checksum == trainer.weights.checksum)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        func message(_ data: Data) throws -> String {
            let p = dir + "/bad.state"
            try data.write(to: URL(fileURLWithPath: p))
            do { _ = try TrainingState.read(path: p); return "" } catch { return "\(error)" }
        }
        #expect(try message(good.prefix(good.count - 4 * 10)).contains("truncated"))
        let jsonLength = Int(good[12]) | Int(good[13]) << 8 | Int(good[14]) << 16 | Int(good[15]) << 24
        let json = String(decoding: good[16 ..< 16 + jsonLength], as: UTF8.self)
        let edited = Data(json.replacingOccurrences(of: "\"adapterCount\":\(lora.values.count)", with: "\"adapterCount\":\(lora.values.count - 1)").utf8)
        var out = good.prefix(12)
        out += withUnsafeBytes(of: UInt32(edited.count).littleEndian) { Data($0) }
        #expect(try message(out + edited + good[(16 + jsonLength)...]).contains("adapter count"))
    }
}
