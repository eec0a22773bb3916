import Foundation
import Testing
import TestKit
@testable import LlamaCore

@Suite struct CheckpointTests {
    @Test(arguments: ["tiny-mha", "tiny-gqa"])
    func legacyRoundTripIsByteIdentical(name: String) throws {
        let path = Fixtures.model(name)
        let (weights, format) = try Checkpoint.read(path: path)
        #expect(format == .legacy)
        let out = try Fixtures.temporaryDirectory() + "/\(name).bin"
        try Checkpoint.writeLegacy(weights, to: out)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        let written = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(original == written)
    }

    @Test func fixtureConfigsAreRead() throws {
        let mha = try Checkpoint.read(path: Fixtures.model("tiny-mha")).weights.config
        #expect(mha == LlamaConfig(dim: 64, hiddenDim: 172, nLayers: 4, nHeads: 8, nKVHeads: 8, vocabSize: 512, seqLen: 128))
        let gqa = try Checkpoint.read(path: Fixtures.model("tiny-gqa")).weights.config
        #expect(gqa == LlamaConfig(dim: 96, hiddenDim: 256, nLayers: 3, nHeads: 6, nKVHeads: 2, vocabSize: 512,
                                   seqLen: 128, sharedClassifier: false))
    }

    /// The config alone, read from the header (legacy, version 1) or config.json, is the one a full
    /// read finds; a header that a full read refuses is refused too.
    @Test func theConfigAloneIsTheFullReadsConfig() throws {
        for name in ["tiny-mha", "tiny-gqa"] {
            #expect(try Checkpoint.readConfig(path: Fixtures.model(name)) == Checkpoint.read(path: Fixtures.model(name)).weights.config)
            let version1 = try Fixtures.temporaryDirectory() + "/\(name)-v1.bin"
            try CheckpointTests.writeVersion1(try Checkpoint.read(path: Fixtures.model(name)).weights, to: version1)
            #expect(try Checkpoint.readConfig(path: version1) == Checkpoint.read(path: version1).weights.config)
        }
        let hf = Fixtures.huggingFace("hf-llama2-mha")
        #expect(try Checkpoint.readConfig(path: hf) == Checkpoint.read(path: hf).weights.config)
        let short = try Fixtures.temporaryDirectory() + "/short.bin"
        try Data([1, 2]).write(to: URL(fileURLWithPath: short))
        #expect(throws: LlamaError.self) { try Checkpoint.readConfig(path: short) }
    }

    /// Writes `weights` in llama2.c's version-1 layout (as its export.py does).
    static func writeVersion1(_ weights: ModelWeights, to path: String) throws {
        var data = Data()
        func append<T>(_ value: T) { withUnsafeBytes(of: value) { data.append(contentsOf: $0) } }
        let c = weights.config
        append(UInt32(0x616B_3432))
        append(Int32(1))
        for v in [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKVHeads, c.vocabSize, c.seqLen] { append(Int32(v)) }
        data.append(c.sharedClassifier ? 1 : 0)
        data.append(contentsOf: [UInt8](repeating: 0, count: 256 - data.count))
        for tensor in Checkpoint.versionedOrder(c) {
            for v in weights.values(tensor) { append(v) }
        }
        try data.write(to: URL(fileURLWithPath: path))
    }

    @Test(arguments: ["tiny-mha", "tiny-gqa"])
    func version1IsReadIntoTheSameWeights(name: String) throws {
        let (weights, _) = try Checkpoint.read(path: Fixtures.model(name))
        let path = try Fixtures.temporaryDirectory() + "/v1.bin"
        try CheckpointTests.writeVersion1(weights, to: path)
        let (read, format) = try Checkpoint.read(path: path)
        #expect(format == .version1)
        #expect(read.config == weights.config)
        // Version 1 stores no RoPE tables; every trainable tensor must come back unchanged.
        for tensor in weights.layout.trainableTensors {
            let same = read.values(tensor) == weights.values(tensor)
            #expect(same, "\(tensor.name)")
        }
    }

    @Test func truncatedCheckpointGivesExpectedAndActualSizes() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.model("tiny-mha")))
        let path = try Fixtures.temporaryDirectory() + "/cut.bin"
        try data.prefix(data.count - 100).write(to: URL(fileURLWithPath: path))
        do {
            _ = try Checkpoint.read(path: path)
            Issue.record("a truncated checkpoint was accepted")
        } catch let error as LlamaError {
            #expect(error.description.contains("truncated"))
            #expect(error.description.contains("\(data.count)"))
            #expect(error.description.contains("\(data.count - 100)"))
        }
    }

    /// A header claiming dimensions far beyond the file is refused before any weight buffer is
    /// allocated, in both formats: sizes past 2^44 floats by the header check (before: an overflow trap
    /// or the allocator's abort), 1.9 GB of weights as truncated with the size it implies (before: 1.8 GB
    /// allocated first).
    @Test func aHeaderClaimingHugeDimensionsIsRefusedBeforeAllocating() throws {
        let directory = try Fixtures.temporaryDirectory()
        for (dims, implied) in [([Int32(1 << 24), 1 << 24, 1 << 24, 8, 8, 1 << 24, 1 << 24], "70"),
                                ([Int32(4096), 11008, 8, 32, 32, 32000, 2048], "1.9")] {
            let legacy = dims.withUnsafeBytes { Data($0) } + Data(count: 4096)
            var versioned = Data(count: 256)
            versioned.replaceSubrange(0..<4, with: withUnsafeBytes(of: Checkpoint.versionedMagic.littleEndian) { Data($0) })
            versioned.replaceSubrange(4..<8, with: withUnsafeBytes(of: Int32(1).littleEndian) { Data($0) })
            versioned.replaceSubrange(8..<36, with: dims.withUnsafeBytes { Data($0) })
            versioned[36] = 1
            for (name, data) in [("legacy", legacy), ("versioned", versioned + Data(count: 4096))] {
                let path = directory + "/huge-\(implied)-\(name).bin"
                try data.write(to: path.url)
                let before = MemoryProbe.peakResidentBytes()
                do {
                    _ = try Checkpoint.read(path: path)
                    Issue.record("a \(name) checkpoint claiming \(implied) of weights was accepted")
                } catch let error as LlamaError where implied == "70" {
                    // Past 2^44 floats the header itself is refused, with the tensor that overflows.
                    #expect(error.description.contains("more than 2^44 floats"), "\(error)")
                } catch let error as LlamaError {
                    #expect(error.description.contains("truncated"), "\(error)")
                    #expect(error.description.contains("\(data.count)"), "\(error)")
                }
                #expect(MemoryProbe.peakResidentBytes() - before < 200_000_000)
            }
        }
    }

    @Test func trailingBytesAreRefused() throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.model("tiny-gqa")))
        data.append(contentsOf: [0, 0, 0, 0])
        let path = try Fixtures.temporaryDirectory() + "/long.bin"
        try data.write(to: path.url)
        #expect(throws: LlamaError.self) { try Checkpoint.read(path: path) }
    }

    @Test func wrongHeaderNamesTheField() throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.model("tiny-mha")))
        // n_kv_heads = 3 does not divide n_heads = 8.
        data.replaceSubrange(16..<20, with: withUnsafeBytes(of: Int32(3)) { Data($0) })
        let path = try Fixtures.temporaryDirectory() + "/bad.bin"
        try data.write(to: path.url)
        do {
            _ = try Checkpoint.read(path: path)
            Issue.record("a bad header was accepted")
        } catch let error as LlamaError {
            #expect(error.description.contains("n_kv_heads"))
        }
        // A file too short for any header, and a version this reader does not know.
        try Data([1, 2]).write(to: path.url)
        #expect(throws: LlamaError.self) { try Checkpoint.read(path: path) }
        var v2 = Data()
        withUnsafeBytes(of: UInt32(0x616B_3432)) { v2.append(contentsOf: $0) }
        withUnsafeBytes(of: Int32(2)) { v2.append(contentsOf: $0) }
        v2.append(contentsOf: [UInt8](repeating: 0, count: 300))
        try v2.write(to: path.url)
        do {
            _ = try Checkpoint.read(path: path)
            Issue.record("version 2 was accepted")
        } catch let error as LlamaError {
            #expect(error.description.contains("version 2"))
        }
    }

    @Test func randomInitIsDeterministicAndReadable() throws {
        let config = LlamaConfig(dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 50, seqLen: 16,
                                 sharedClassifier: false)
        let a = ModelWeights.random(config: config, seed: 5)
        let b = ModelWeights.random(config: config, seed: 5)
        let c = ModelWeights.random(config: config, seed: 6)
        #expect(a.values(.wq) == b.values(.wq))
        #expect(a.values(.wq) != c.values(.wq))
        #expect(a.values(.rmsFinal) == [Float](repeating: 1, count: 32))
        let path = try Fixtures.temporaryDirectory() + "/init.bin"
        try Checkpoint.writeLegacy(a, to: path)
        let (read, _) = try Checkpoint.read(path: path)
        #expect(read.config == config)
        #expect(read.values(.classifier) == a.values(.classifier))
    }

    @Test func invalidConfigsNameTheirField() {
        func field(_ c: LlamaConfig) -> String? {
            do { try c.validate(); return nil } catch let LlamaError.invalidConfig(field, _) { return field } catch { return "?" }
        }
        let good = LlamaConfig(dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 100, seqLen: 32)
        #expect(field(good) == nil)
        var c = good; c.nKVHeads = 3
        #expect(field(c) == "n_kv_heads")
        c = good; c.nHeads = 5
        #expect(field(c) == "n_heads")
        c = good; c.dim = 36; c.nHeads = 4; c.nKVHeads = 4  // head size 9 is odd
        #expect(field(c) == "n_heads")
        c = good; c.vocabSize = 0
        #expect(field(c) == "vocab_size")
        c = good; c.seqLen = -1
        #expect(field(c) == "seq_len")
        c = good; c.normEps = 0
        #expect(field(c) == "norm_eps")
        c = good; c.slidingWindow = 0; c.slidingWindowLayers = [0]
        #expect(field(c) == "sliding_window")
        for layers in [[], [2], [1, 0], [0, 0]] {
            c = good; c.slidingWindow = 8; c.slidingWindowLayers = layers
            #expect(field(c) == "sliding_window_layers", "\(layers)")
        }
        c = good; c.slidingWindowLayers = [1]
        #expect(field(c) == "sliding_window_layers")
    }

    /// A sliding window is the config's: it names its layers, survives JSON (a config written before it decodes
    /// without one), and a query at position i attends from key max(0, i - W + 1).
    @Test func slidingWindowsAreTheConfigs() throws {
        var c = LlamaConfig(dim: 64, hiddenDim: 128, nLayers: 3, nHeads: 4, nKVHeads: 2, vocabSize: 100, seqLen: 32)
        let plain = try JSONEncoder().encode(c)
        #expect(!String(decoding: plain, as: UTF8.self).contains("slidingWindow"))
        c.slidingWindow = 8
        c.slidingWindowLayers = [0, 2]
        try c.validate()
        #expect(c.attentionWindow(layer: 0) == 8 && c.attentionWindow(layer: 1) == nil && c.attentionWindow(layer: 2) == 8)
        #expect(try JSONDecoder().decode(LlamaConfig.self, from: JSONEncoder().encode(c)) == c)
        #expect(try JSONDecoder().decode(LlamaConfig.self, from: plain).slidingWindow == nil)
        #expect([0, 6, 7, 8, 20].map { LlamaConfig.firstAttendedKey(position: $0, window: 8) } == [0, 0, 0, 1, 13])
        #expect(LlamaConfig.firstAttendedKey(position: 20, window: nil) == 0)
    }
}

extension String {
    var url: URL { URL(fileURLWithPath: self) }
}
