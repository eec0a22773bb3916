import ClusterRuntime
import LlamaCore
import Recipe
import Testing
import Workers

/// What a worker holds at most, and the launch's refusal of a spec whose workers on this machine cannot
/// fit in its memory.
@Suite struct MemoryCheckTests {
    @Test func aGeneratorHoldsWeightsPanelsAndACachePerSlot() {
        let c = LlamaConfig.stories15M
        let memory = WorkerMemory.estimate(role: .generator, config: c, decodeSlots: 16)
        let part = { (prefix: String) in memory.parts.first { $0.name.hasPrefix(prefix) }?.bytes ?? -1 }
        #expect(part("weights") == c.parameterCount * 4)
        #expect(part("batched-decode panels") == LlamaModel.panelBytes(c))
        // Panels pad each matrix to whole 16-feature panels (and three spare panels): a little more
        // than the matrices themselves.
        let matrices = (c.parameterCount - c.vocabSize * c.dim - c.nLayers * 2 * c.dim - c.dim + (c.sharedClassifier ? c.vocabSize * c.dim : 0)) * 4
        #expect(part("batched-decode panels") >= matrices && part("batched-decode panels") < matrices * 11 / 10)
        // stories15M's context is 256 tokens: each slot's cache is counted whole.
        #expect(part("KV cache") == 17 * 2 * c.nLayers * c.seqLen * c.kvDim * 4)
        let more = WorkerMemory.estimate(role: .generator, config: c, decodeSlots: 64)
        #expect(more.bytes - memory.bytes > 48 * 2 * c.nLayers * c.seqLen * c.kvDim * 4)
        #expect(memory.description.contains("KV cache (17 sequences x 256 positions)"))
        // A longer context is counted at 256 positions a sequence (a prompt and its answer).
        let long = WorkerMemory.estimate(role: .generator, config: .llama110M, decodeSlots: 16)
        #expect(long.parts.contains { $0.name == "KV cache (17 sequences x 256 positions)" && $0.bytes == 17 * 2 * 12 * 256 * 768 * 4 })
    }

    @Test func theLearnersShareGrowsWithTheModelsItTrains() {
        let c = LlamaConfig.llama110M
        let policyOnly = WorkerMemory.estimate(role: .learner, config: c, learner: .init(rewardModels: 0, valueModel: false))
        let full = WorkerMemory.estimate(role: .learner, config: c, learner: .init(rewardModels: 2, valueModel: true))
        // Weights, gradients and two AdamW moments: 16 bytes a parameter per model trained.
        #expect(full.bytes - policyOnly.bytes >= 3 * 16 * c.parameterCount)
        #expect(policyOnly.bytes > 20 * c.parameterCount)
        #expect(WorkerMemory.estimate(role: .rewardFunction, config: c).bytes == 0)
    }

    static func spec(generators: Int, plan: String) throws -> ClusterSpec {
        try ClusterSpec.parse("""
        coordinator: tcp://127.0.0.1:5555
        hosts:
          - name: here
            address: local
            workers: {generator: \(generators), learner: 1, reward-model: 1, safety-model: 1, reference-policy: 1}
          - name: far
            address: elsewhere.example
            workers: {generator: 8}
        model: {checkpoint: /nonexistent/policy.bin}
        task: {seed: 1}
        plan:
        \(plan)
        """, baseDirectory: "/", checkingFiles: false)
    }

    /// `decode_slots` reaches the generators' command lines (and only theirs); a bad value is refused
    /// naming the key.
    @Test func decodeSlotsReachTheGenerators() throws {
        var spec = try MemoryCheckTests.spec(generators: 1, plan: "  - evaluate: {name: SFT}")
        #expect(spec.decodeSlots == GeneratorService.defaultDecodeSlots)
        let host = spec.hosts[0]
        func arguments(_ role: WorkerRole) -> [String] {
            spec.workerArguments(id: "\(role.rawValue)-0", role: role, host: host, coordinator: "tcp://127.0.0.1:5555", runID: nil, stateDirectory: "/tmp/s")
        }
        #expect(!arguments(.generator).contains("--decode-slots"))
        let text = """
        coordinator: tcp://127.0.0.1:5555
        decode_slots: 16
        hosts: [{name: here, address: local, workers: {generator: 1, learner: 1}}]
        model: {checkpoint: /nonexistent/policy.bin}
        plan: [{hold: {seconds: 1}}]
        """
        spec = try ClusterSpec.parse(text, baseDirectory: "/", checkingFiles: false)
        #expect(spec.decodeSlots == 16)
        #expect(arguments(.generator).joined(separator: " ").contains("--decode-slots 16"))
        #expect(!arguments(.learner).contains("--decode-slots"))
        for bad in ["0", "4097", "1.5", "many"] {
            #expect(throws: ClusterSpec.Invalid.self) { try ClusterSpec.parse(text.replacingOccurrences(of: "decode_slots: 16", with: "decode_slots: \(bad)"), baseDirectory: "/", checkingFiles: false) }
            do {
                _ = try ClusterSpec.parse(text.replacingOccurrences(of: "decode_slots: 16", with: "decode_slots: \(bad)"), baseDirectory: "/", checkingFiles: false)
            } catch {
                #expect("\(error)".contains("decode_slots"), "\(error)")
            }
        }
    }

    /// `precision:` reaches the generators' and the learner's command lines (each its own part) and the
    /// generators' memory share; a bad format, an unknown key or bfloat16 for a role that computes in
    /// float32 is refused by name.
    @Test func precisionReachesTheGeneratorsAndTheLearner() throws {
        let text = """
        coordinator: tcp://127.0.0.1:5555
        precision: {generator: bfloat16, kv_cache: bfloat16, learner: bfloat16, reference-policy: float32}
        hosts: [{name: here, address: local, workers: {generator: 1, learner: 1}}]
        model: {checkpoint: /nonexistent/policy.bin}
        plan: [{hold: {seconds: 1}}]
        """
        let spec = try ClusterSpec.parse(text, baseDirectory: "/", checkingFiles: false)
        #expect(spec.precision == ClusterSpec.Precision(generator: .bfloat16, kvCache: .bfloat16, learner: .bfloat16))
        func arguments(_ role: WorkerRole) -> String {
            spec.workerArguments(id: "\(role.rawValue)-0", role: role, host: spec.hosts[0], coordinator: "tcp://127.0.0.1:5555", runID: nil,
                                 stateDirectory: "/tmp/s").joined(separator: " ")
        }
        #expect(arguments(.generator).contains("--precision bfloat16 --kv-cache bfloat16"))
        #expect(arguments(.learner).contains("--precision bfloat16") && !arguments(.learner).contains("--kv-cache"))
        #expect(!arguments(.referencePolicy).contains("--precision"))
        let c = LlamaConfig.llama110M
        let bf16 = WorkerMemory.estimate(role: .generator, config: c, precision: .bfloat16, kvCache: .bfloat16)
        let f32 = WorkerMemory.estimate(role: .generator, config: c)
        #expect(bf16.bytes < f32.bytes && bf16.description.contains("bfloat16 batched-decode panels"))
        // A bfloat16 learner also holds each trained model's packing buffers.
        let bf16Learner = WorkerMemory.estimate(role: .learner, config: c, precision: .bfloat16)
        #expect(bf16Learner.bytes > WorkerMemory.estimate(role: .learner, config: c).bytes && bf16Learner.description.contains("bfloat16 packing buffers (4 model(s)"))
        var plain = spec
        plain.precision = ClusterSpec.Precision()
        #expect(plain.memoryShortfall(config: c, available: Int.max) == nil)
        for (bad, key) in [("{generator: float16}", "precision.generator"), ("{kv_cache: 8}", "precision.kv_cache"),
                           ("{safety-model: bfloat16}", "precision.safety-model"), ("{learner: bf16}", "precision.learner"), ("{decoder: bfloat16}", "precision.decoder"), ("bfloat16", "precision")] {
            let changed = text.replacingOccurrences(of: "{generator: bfloat16, kv_cache: bfloat16, learner: bfloat16, reference-policy: float32}", with: bad)
            #expect(throws: ClusterSpec.Invalid.self) { try ClusterSpec.parse(changed, baseDirectory: "/", checkingFiles: false) }
            do {
                _ = try ClusterSpec.parse(changed, baseDirectory: "/", checkingFiles: false)
            } catch {
                #expect("\(error)".contains(key), "\(error)")
            }
        }
    }

    @Test func aSpecThatCannotFitOnThisMachineIsRefusedNamingEachRolesShare() throws {
        let spec = try MemoryCheckTests.spec(generators: 2, plan: "  - train_rm: {model: reward-model}\n  - ppo_round: {name: V5}")
        #expect(spec.learnerLoad == WorkerMemory.LearnerLoad(rewardModels: 1, valueModel: true))
        let c = LlamaConfig.llama110M
        let needed = 2 * WorkerMemory.estimate(role: .generator, config: c).bytes
            + WorkerMemory.estimate(role: .learner, config: c, learner: spec.learnerLoad).bytes
            + 2 * WorkerMemory.estimate(role: .rewardModel, config: c).bytes + WorkerMemory.estimate(role: .referencePolicy, config: c).bytes
        // Only this machine's workers count (the 8 generators of host "far" say what they hold there).
        #expect(spec.memoryShortfall(config: c, available: needed) == nil)
        let refusal = try #require(spec.memoryShortfall(config: c, available: needed - 1))
        #expect(refusal.contains("need up to \(WorkerMemory.format(needed))"))
        #expect(refusal.contains("2 generator x") && refusal.contains("1 learner x") && refusal.contains("KV cache (65 sequences x 256 positions)"))
        #expect(refusal.contains("1 reward model(s) in training") && refusal.contains("value model in training"))
        #expect(!refusal.contains("8 generator"))
        // The plan shapes the learner's share: no reward model or value model trained, less held.
        // Fewer decode slots, smaller caches: the spec's decode_slots reaches the generators' share.
        var fewerSlots = spec
        fewerSlots.decodeSlots = 8
        #expect(fewerSlots.memoryShortfall(config: c, available: needed - 1) == nil)
        let sampling = try MemoryCheckTests.spec(generators: 2, plan: "  - evaluate: {name: SFT}")
        #expect(sampling.learnerLoad == WorkerMemory.LearnerLoad(rewardModels: 0, valueModel: false))
        #expect(sampling.memoryShortfall(config: c, available: needed - 1) == nil)
        // A round that retrains both reward models on new pairs has the learner hold both.
        let retraining = try MemoryCheckTests.spec(generators: 2, plan: "  - rs_round: {name: V1, new_pairs: 64}")
        #expect(retraining.learnerLoad == WorkerMemory.LearnerLoad(rewardModels: 2, valueModel: false))
    }

    /// A pretrained reward model counts by its own shape: on its workers, and on the learner where the plan
    /// trains it (there too the value model, which starts from it, is sized as it where it is the larger).
    @Test func pretrainedRewardModelsCountByTheirOwnShape() throws {
        let spec = try MemoryCheckTests.spec(generators: 1, plan: "  - train_rm: {model: reward-model}\n  - ppo_round: {name: V5}")
        let policy = LlamaConfig.llama110M
        var large = policy
        large.nLayers = 24
        large.dim = 1024
        large.hiddenDim = 2816
        large.nHeads = 16
        large.nKVHeads = 16
        let load = spec.learnerLoad(pretrainedConfigs: [.rewardModel: large])
        #expect(load == WorkerMemory.LearnerLoad(rewardModels: 0, valueModel: true, pretrainedRewardModels: [large]))
        let learner = WorkerMemory.estimate(role: .learner, config: policy, learner: load)
        let plain = WorkerMemory.estimate(role: .learner, config: policy, learner: spec.learnerLoad)
        #expect(learner.bytes > plain.bytes + 3 * large.parameterCount * 4 && learner.description.contains("pretrained reward model in training"))
        let needed = try #require(spec.memoryShortfall(config: policy, available: 0, roleConfigs: [.rewardModel: large]))
        let smaller = try #require(spec.memoryShortfall(config: policy, available: 0))
        #expect(needed != smaller && needed.contains("pretrained reward model in training"))
    }

    /// `lora:` reaches the learner's command line as its `--lora-*` options, counts the adapters (not
    /// whole-model optimizer state) on the learner and the kept base on the generators; bad settings
    /// are refused by name.
    @Test func loraReachesTheLearnerAndTheMemoryCheck() throws {
        let text = """
        coordinator: tcp://127.0.0.1:5555
        lora: {rank: 8, alpha: 32, dropout: 0.05, targets: [wq, wv, w2]}
        hosts: [{name: here, address: local, workers: {generator: 1, learner: 1}}]
        model: {checkpoint: /nonexistent/policy.bin}
        plan: [{hold: {seconds: 1}}]
        """
        let spec = try ClusterSpec.parse(text, baseDirectory: "/", checkingFiles: false)
        #expect(spec.lora == LoRASettings(rank: 8, alpha: 32, dropout: 0.05, targets: [.wq, .wv, .w2]))
        func arguments(_ role: WorkerRole) -> String {
            spec.workerArguments(id: "\(role.rawValue)-0", role: role, host: spec.hosts[0], coordinator: "tcp://127.0.0.1:5555", runID: nil,
                                 stateDirectory: "/tmp/s").joined(separator: " ")
        }
        #expect(arguments(.learner).contains("--lora-rank 8 --lora-alpha 32.0 --lora-dropout 0.05 --lora-targets wq,wv,w2"))
        #expect(!arguments(.generator).contains("--lora"))
        let c = LlamaConfig.llama110M
        let full = WorkerMemory.estimate(role: .learner, config: c), adapters = WorkerMemory.estimate(role: .learner, config: c, lora: spec.lora)
        #expect(adapters.bytes < full.bytes && adapters.description.contains("LoRA adapters"))
        #expect(WorkerMemory.estimate(role: .generator, config: c, lora: spec.lora).bytes == WorkerMemory.estimate(role: .generator, config: c).bytes + c.parameterCount * 4)
        let whole = try ClusterSpec.parse(text.replacingOccurrences(of: "lora: {rank: 8, alpha: 32, dropout: 0.05, targets: [wq, wv, w2]}\n", with: ""),
                                          baseDirectory: "/", checkingFiles: false)
        #expect(whole.lora == nil && !whole.workerArguments(id: "l", role: .learner, host: whole.hosts[0], coordinator: "tcp://127.0.0.1:5555",
                                                               runID: nil, stateDirectory: "/tmp/s").contains("--lora-rank"))
        for (bad, key) in [("{rank: 0}", "lora.rank"), ("{rank: 8.5}", "lora.rank"), ("{alpha: -1}", "alpha"), ("{dropout: 1}", "dropout"),
                           ("{targets: [wq, norm]}", "norm"), ("{targets: []}", "targets"), ("{targets: [wq, wq]}", "twice"), ("{rnak: 8}", "lora.rnak"),
                           ("8", "lora")] {
            let changed = text.replacingOccurrences(of: "{rank: 8, alpha: 32, dropout: 0.05, targets: [wq, wv, w2]}", with: bad)
            do {
                _ = try ClusterSpec.parse(changed, baseDirectory: "/", checkingFiles: false)
                Issue.record("lora: \(bad) was accepted")
            } catch {
                #expect(error is ClusterSpec.Invalid && "\(error)".contains(key), "\(error)")
            }
        }
    }
}
