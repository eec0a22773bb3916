import Foundation
import LlamaCore
import Testing
import TestKit
import Workers

/// Runs the built `rlhf` executable as a user would.
@Suite struct CLITests {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static var executable: URL { TestKit.executable }

    /// Runs `rlhf arguments` with `stdin`; output goes through files (reading pipes with Foundation
    /// can fail with EINTR while other tests' children exit).
    static func rlhf(_ arguments: [String], stdin: String = "", directory: String? = nil,
                     environment: [String: String] = [:]) throws -> Output {
        let dir = TestKit.scratch("rlhf-cli")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let paths = ["in", "out", "err"].map { dir + "/" + $0 }
        try stdin.write(toFile: paths[0], atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: paths[1], contents: nil)
        _ = FileManager.default.createFile(atPath: paths[2], contents: nil)
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: paths[0]))
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: paths[1]))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: paths[2]))
        try process.run()
        process.waitUntilExit()
        return Output(status: process.terminationStatus,
                      stdout: try String(contentsOfFile: paths[1], encoding: .utf8),
                      stderr: try String(contentsOfFile: paths[2], encoding: .utf8))
    }

    @Test func selftestOnTheFixtures() throws {
        let result = try CLITests.rlhf(["selftest", "--fixtures", Fixtures.models])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        // 3 inference checks per model, 27 training checks per model (SFT, AdamW, reward model, PPO; GRPO and
        // Dr. GRPO, DPO, IPO and conservative DPO) and 3 of the group methods' advantages.
        #expect(lines.filter { $0.hasPrefix("PASS") }.count == 66)
        for check in ["PPO gradient", "GRPO gradient", "Dr. GRPO gradient", "DPO gradient", "IPO gradient", "rloo advantages"] {
            #expect(lines.contains { $0.hasPrefix("PASS tiny-gqa: \(check)") }, "\(check)")
        }
        #expect(lines.last == "selftest: 66 passed, 0 failed")
    }

    @Test func selftestFailsOnAWrongFixture() throws {
        let dir = TestKit.scratch("rlhf-cli")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Fixtures.model("tiny-mha"), toPath: dir + "/tiny-mha.bin")
        // The other model's expectations cannot hold for this checkpoint.
        let other = try String(contentsOfFile: Fixtures.models + "/tiny-gqa.generate.json", encoding: .utf8)
        try other.write(toFile: dir + "/tiny-mha.generate.json", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["selftest", "--fixtures", dir])
        #expect(result.status != 0)
        #expect(result.stdout.contains("FAIL"))
    }

    /// `selftest --precision bfloat16` reports, without a verdict, how far bfloat16 products move the
    /// fixtures' logits, greedy ids, SFT loss and gradient.
    @Test func selftestReportsWhatBFloat16Moves() throws {
        let result = try CLITests.rlhf(["selftest", "--fixtures", Fixtures.models, "--precision", "bfloat16"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("SFT gradient [bfloat16]") && result.stdout.contains("logits_at"))
        #expect(!result.stdout.contains("PASS") && !result.stdout.contains("FAIL"))
    }

    /// `--precision` is the generator's and the learner's, `--kv-cache` the generator's, `--lora-*` the
    /// learner's: another role is refused naming them, and a format or target that does not exist too.
    @Test func aWorkerRefusesPrecisionItCannotUse() throws {
        let scorer = try CLITests.rlhf(["worker", "--role", "reward-model", "--coordinator", "tcp://127.0.0.1:1", "--precision", "bfloat16"])
        #expect(scorer.status != 0 && scorer.stderr.contains("--precision is a generator and learner option"), "\(scorer.stderr)")
        let learner = try CLITests.rlhf(["worker", "--role", "learner", "--coordinator", "tcp://127.0.0.1:1", "--kv-cache", "bfloat16"])
        #expect(learner.status != 0 && learner.stderr.contains("--kv-cache is a generator option"), "\(learner.stderr)")
        let format = try CLITests.rlhf(["worker", "--role", "generator", "--coordinator", "tcp://127.0.0.1:1", "--kv-cache", "float16"])
        #expect(format.status != 0 && format.stderr.contains("kv-cache"), "\(format.stderr)")
        // LoRA is the learner's: another role, or a target that is not a projection matrix, is refused by name.
        let lora = try CLITests.rlhf(["worker", "--role", "generator", "--coordinator", "tcp://127.0.0.1:1", "--lora-rank", "8"])
        #expect(lora.status != 0 && lora.stderr.contains("--lora-rank is a learner option"), "\(lora.stderr)")
        let target = try CLITests.rlhf(["worker", "--role", "learner", "--coordinator", "tcp://127.0.0.1:1", "--lora-rank", "8", "--lora-targets", "wq,norm"])
        #expect(target.status != 0 && target.stderr.contains("norm is not a matrix an adapter can target"), "\(target.stderr)")
    }

    @Test func generateJSON() throws {
        let result = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.model("tiny-gqa"), "--tokenizer", Fixtures.kjvBin,
                                        "--prompt", "In the beginning", "--steps", "12", "--seed", "3", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let ids = object["ids"] as! [Int]
        #expect(!ids.isEmpty && ids.count <= 12)
        #expect((object["logprobs"] as! [Double]).count == ids.count)
        #expect((object["prompt_ids"] as! [Int]).first == 1)
        #expect(object["text"] is String)
        #expect((object["tokens_per_second"] as! Double) > 0)
        // Same seed, same tokens.
        let again = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.model("tiny-gqa"), "--tokenizer", Fixtures.kjvBin,
                                       "--prompt", "In the beginning", "--steps", "12", "--seed", "3", "--json"])
        let object2 = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as! [String: Any]
        #expect(object2["ids"] as! [Int] == ids)
    }

    /// `--chat`: the user message (and `--system`) in the model's chat format with its generation
    /// prompt, the answer alone printed, ending at the end of turn; a format can be named instead.
    @Test func generateAnswersAChatMessage() throws {
        let checkpoint = TestKit.repository + "/models/chat-world/sft.bin"
        let tokenizer = try Tokenizer(path: TestKit.repository + "/models/chat-world/tokenizer.bin")
        let result = try CLITests.rlhf(["generate", "--checkpoint", checkpoint, "--chat", "Tell me a story about a fox.",
                                        "--temperature", "0", "--steps", "200", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect((object["prompt_ids"] as! [Int]).map(Int32.init) == ChatTemplate.promptIDs("Tell me a story about a fox.", tokenizer: tokenizer))
        #expect(object["finish_reason"] as? String == "eos" && (object["ids"] as! [Int]).last == Int(tokenizer.eosId), "\(object)")
        let text = try #require(object["text"] as? String)
        #expect(text.lowercased().contains("fox"), "\(text)")
        // Streamed: the answer alone, without the prompt.
        let streamed = try CLITests.rlhf(["generate", "--checkpoint", checkpoint, "--chat", "Tell me a story about a fox.",
                                          "--temperature", "0", "--steps", "200"])
        #expect(streamed.status == 0 && streamed.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == text.trimmingCharacters(in: .whitespacesAndNewlines),
                "\(streamed.stdout)")
        let system = try CLITests.rlhf(["generate", "--checkpoint", checkpoint, "--chat", "Hi.", "--system", "Be brief.",
                                        "--temperature", "0", "--steps", "4", "--json"])
        let systemObject = try JSONSerialization.jsonObject(with: Data(system.stdout.utf8)) as! [String: Any]
        #expect((systemObject["prompt_ids"] as! [Int]).map(Int32.init) == ChatTemplate.promptIDs("Hi.", system: "Be brief.", tokenizer: tokenizer))
        // A format the tokenizer cannot write, and options that go with --chat alone, are refused.
        let chatml = try CLITests.rlhf(["generate", "--checkpoint", checkpoint, "--chat", "Hi.", "--chat-template", "chatml"])
        #expect(chatml.status != 0 && chatml.stderr.contains("tokenizer.bin") && chatml.stderr.contains("<|im_start|>"), "\(chatml.stderr)")
        let stray = try CLITests.rlhf(["generate", "--checkpoint", checkpoint, "--prompt", "Hi.", "--system", "Be brief."])
        #expect(stray.status != 0 && stray.stderr.contains("--system goes with --chat"), "\(stray.stderr)")
        let both = try CLITests.rlhf(["generate", "--checkpoint", checkpoint, "--prompt", "Hi.", "--chat", "Hi."])
        #expect(both.status != 0 && both.stderr.contains("exactly one of --prompt, --prompt-ids or --chat"), "\(both.stderr)")
    }

    @Test func generateGreedyIdsMatchTheFixture() throws {
        let fixture = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.models + "/tiny-mha.generate.json"))) as! [String: Any]
        let prompt = (fixture["prompt_ids"] as! [Int]).map(String.init).joined(separator: ",")
        let result = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.model("tiny-mha"), "--prompt-ids",
                                        prompt, "--steps", "48", "--temperature", "0",
                                        "--ignore-eos", "--batch", "2", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(object["ids"] as! [Int] == fixture["greedy_ids"] as! [Int])
        let samples = object["samples"] as! [[String: Any]]
        #expect(samples.count == 2)
        #expect(samples[0]["ids"] as! [Int] == samples[1]["ids"] as! [Int])
    }

    @Test func generateRejectsBadInput() throws {
        let missing = try CLITests.rlhf(["generate", "--checkpoint", "/nonexistent.bin", "--prompt-ids", "1"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("/nonexistent.bin"))
        let noTokenizer = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.model("tiny-mha"), "--prompt", "hi"])
        #expect(noTokenizer.status != 0)
        #expect(noTokenizer.stderr.contains("--tokenizer"))
        let wrongVocab = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.model("tiny-mha"), "--tokenizer",
                                            Fixtures.llama2Bin, "--prompt", "hi"])
        #expect(wrongVocab.status != 0)
        #expect(wrongVocab.stderr.contains("vocab_size"))
        let tooLong = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.model("tiny-mha"), "--prompt-ids",
                                         Array(repeating: "5", count: 300).joined(separator: ",")])
        #expect(tooLong.status != 0)
        #expect(tooLong.stderr.contains("seq_len"))
        // A batch whose key-value caches exceed the machine's memory is refused with what it would need
        // (100,000 samples asked for 11 GB and aborted). A small model with a long context: 64 MB a sample.
        let dir = try Fixtures.temporaryDirectory()
        let made = try CLITests.rlhf(["checkpoint", "init", "--dim", "8", "--hidden-dim", "16", "--layers", "1", "--heads", "1",
                                      "--vocab", "32", "--seq-len", "1000000", "--out", dir + "/long.bin"])
        #expect(made.status == 0, "\(made.stderr)")
        let huge = try CLITests.rlhf(["generate", "--checkpoint", dir + "/long.bin", "--prompt-ids", "1", "--batch", "65536", "--steps", "1"])
        #expect(huge.status == 1)
        #expect(huge.stderr.contains("--batch 65536") && huge.stderr.contains("GiB of memory, and this machine has"), "\(huge.stderr)")
        let ids = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.model("tiny-mha"), "--prompt-ids", "1,99999999999"])
        #expect(ids.status != 0)
        #expect(ids.stderr.contains("'99999999999' is not an integer token id") && !ids.stderr.contains("USAGE: rlhf <subcommand>"), "\(ids.stderr)")
    }

    /// OpenBLAS's idle server threads (each spins ~0.1 s of a core after the library loads) are stopped at
    /// start-up: a process has as many threads of its own name as one whose OpenBLAS never started them
    /// (OPENBLAS_NUM_THREADS=1). ZeroMQ's and the Swift runtime's threads have names of their own. On a
    /// machine of one core OpenBLAS starts none either way.
    @Test func openBLASIdleServerThreadsAreStopped() throws {
        func threadsNamedRLHF(environment: [String: String]) throws -> Int {
            // Asks a coordinator that is not there: the process waits 5 s for an answer.
            let process = try TestKit.spawn(["status", "--coordinator", "tcp://127.0.0.1:\(try TestKit.freePort())"], environment: environment)
            defer {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            let tasks = "/proc/\(process.processIdentifier)/task"
            func names() -> [String] {
                ((try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []).compactMap {
                    try? String(contentsOfFile: "\(tasks)/\($0)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                }
            }
            // Past start-up once the request's ZeroMQ context runs.
            #expect(TestKit.waitFor(4) { names().contains { $0.hasPrefix("ZMQbg") } })
            return names().filter { $0 == "rlhf" }.count
        }
        let started = try threadsNamedRLHF(environment: [:])
        let neverStarted = try threadsNamedRLHF(environment: ["OPENBLAS_NUM_THREADS": "1"])
        #expect(started == neverStarted, "\(started) threads named rlhf, \(neverStarted) where OpenBLAS starts no server thread")
    }

    /// `--prompt` on a llama2.c file without `--tokenizer` encodes with the tokenizer.bin beside it (as
    /// train and eval do): the same ids as naming it.
    @Test func generateFindsTheTokenizerBesideACheckpointFile() throws {
        let policy = TestKit.repository + "/models/chat-world/sft.bin"
        let arguments = ["generate", "--checkpoint", policy, "--prompt", "Tell me a calm story about a fox.", "--temperature", "0",
                         "--steps", "8", "--json"]
        let beside = try CLITests.rlhf(arguments)
        let named = try CLITests.rlhf(arguments + ["--tokenizer", TestKit.repository + "/models/chat-world/tokenizer.bin"])
        #expect(beside.status == 0, "\(beside.stderr)")
        let a = try HuggingFaceCLITests.json(beside.stdout), b = try HuggingFaceCLITests.json(named.stdout)
        #expect(a["prompt_ids"] as? [Int] == b["prompt_ids"] as? [Int] && a["ids"] as? [Int] == b["ids"] as? [Int])
        #expect((a["prompt_ids"] as? [Int])?.count ?? 0 > 5 && !((a["text"] as? String) ?? "").isEmpty)
    }

    @Test func tokenizeJSONLines() throws {
        let input = "{\"text\": \"Hello world\"}\n{\"text\": \"\"}\nnot json\n{\"text\": \"ok\"}\n"
        let result = try CLITests.rlhf(["tokenize", "--tokenizer", Fixtures.llama2Model, "--bos"], stdin: input)
        #expect(result.status != 0, "a malformed line must be reported")
        #expect(result.stderr.contains("line 3"))
        let lines = result.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(lines.count == 3)
        #expect(lines[0]["ids"] as! [Int] == [1, 15043, 3186])
        #expect(lines[1]["ids"] as! [Int] == [1])
        #expect(lines[2]["text"] as! String == "ok")
    }

    @Test func tokenizerTrainThenTokenize() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let corpus = dir + "/corpus.txt", out = dir + "/tokenizer.bin"
        let text = (0..<200).map { "In the beginning \($0 % 7) the earth was without form, and void; line \($0 % 13)." }
        try (text.joined(separator: "\n") + "\n").write(toFile: corpus, atomically: true, encoding: .utf8)
        let trained = try CLITests.rlhf(["tokenizer", "train", "--corpus", corpus, "--vocab-size", "320", "--out", out])
        #expect(trained.status == 0, "\(trained.stdout)\(trained.stderr)")
        #expect(trained.stdout.contains("320 pieces") && trained.stdout.contains("merges"))
        #expect(trained.stdout.contains("tokens per word") && trained.stdout.contains("time:"))
        let tokenizer = try Tokenizer(path: out)
        #expect(tokenizer.vocabSize == 320)
        let line = "In the beginning, 🙂 the earth"
        let tokenized = try CLITests.rlhf(["tokenize", "--tokenizer", out], stdin: "{\"text\": \"\(line)\"}\n")
        #expect(tokenized.status == 0, "\(tokenized.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(tokenized.stdout.utf8)) as! [String: Any]
        let ids = (object["ids"] as! [Int]).map(Int32.init)
        #expect(ids == tokenizer.encode(line))
        #expect(tokenizer.decode(ids) == line)

        let missing = try CLITests.rlhf(["tokenizer", "train", "--corpus", dir + "/nope.txt", "--vocab-size", "320", "--out", out])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("nope.txt"), "\(missing.stderr)")
        let tooSmall = try CLITests.rlhf(["tokenizer", "train", "--corpus", corpus, "--vocab-size", "100", "--out", out])
        #expect(tooSmall.status != 0)
        #expect(tooSmall.stderr.contains("--vocab-size must be an integer in 259...4194304, got 100"), "\(tooSmall.stderr)")
        // An output that cannot be written is named before the training runs, not after it.
        let nowhere = try CLITests.rlhf(["tokenizer", "train", "--corpus", corpus, "--vocab-size", "320", "--out", dir + "/no-such-folder/t.bin"])
        #expect(nowhere.status == 1)
        #expect(nowhere.stderr.contains("--out: cannot write \(dir)/no-such-folder/t.bin: no directory"), "\(nowhere.stderr)")
    }

    @Test func checkpointInitAndInfo() throws {
        let path = TestKit.scratch("rlhf-init") + ".bin"
        let made = try CLITests.rlhf(["checkpoint", "init", "--dim", "32", "--hidden-dim", "64", "--layers", "2", "--heads", "4",
                                      "--kv-heads", "2", "--vocab", "40", "--seq-len", "16", "--separate-classifier",
                                      "--seed", "2", "--out", path])
        #expect(made.status == 0, "\(made.stderr)")
        let info = try CLITests.rlhf(["checkpoint", "info", path, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as! [String: Any]
        #expect(object["n_kv_heads"] as! Int == 2)
        #expect(object["shared_classifier"] as! Bool == false)
        #expect(object["format"] as! String == "legacy")
        let bad = try CLITests.rlhf(["checkpoint", "init", "--dim", "30", "--hidden-dim", "64", "--layers", "2", "--heads", "4",
                                     "--vocab", "40", "--seq-len", "16", "--out", path])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("n_heads"))
    }
}

/// `rlhf launch` with real worker processes.
@Suite struct LaunchTests {
    @Test func launchRunsAPlanAndStopsEverything() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            address: local
            workers: {generator: 2, reward-model: 1}
        model:
          checkpoint: \(Fixtures.model("tiny-gqa"))
        plan:
          - generate: {prompts: 4, samples: 2, max_new_tokens: 8}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("all 3 workers registered and healthy"))
        #expect(result.stdout.contains("4 prompts x 2 samples -> 8 samples"))
        #expect(result.stdout.contains("stopped 3 workers and the coordinator"))
    }

    /// A spec whose workers cannot fit in this machine's memory is refused before anything starts: the
    /// launch names each role's share, and no coordinator or worker ran (no worker log, no journal record).
    @Test func aSpecThatCannotFitInMemoryIsRefusedBeforeAnythingStarts() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A model with a wide vocabulary (a generator holds its classifier twice and a row of logits per slot)
        // and enough generators to exceed all this machine has: its total, not what is available now, which
        // the tests running beside this one move between this count and the launcher's check.
        let config = LlamaConfig(dim: 64, hiddenDim: 64, nLayers: 1, nHeads: 2, nKVHeads: 2, vocabSize: 1 << 18, seqLen: 256)
        try Checkpoint.writeLegacy(ModelWeights.random(config: config, seed: 1), to: dir + "/long.bin")
        let total = try #require(WorkerMemory.totalBytes())
        let generators = total / WorkerMemory.estimate(role: .generator, config: config).bytes + 1
        let spec = """
        coordinator: tcp://127.0.0.1:*
        hosts:
          - name: here
            address: local
            workers: {generator: \(generators)}
        model:
          checkpoint: \(dir)/long.bin
        plan:
          - hold: {seconds: 1}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("the workers this spec starts on this machine need up to"), "\(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains("\(generators) generator x") && result.stderr.contains("KV cache (65 sequences x 256 positions)"))
        #expect(!result.stdout.contains("coordinator listening"))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir + "/run/logs")) ?? []).isEmpty)
        #expect(((try? String(contentsOfFile: dir + "/run/journal.jsonl", encoding: .utf8)) ?? "").isEmpty)
    }

    /// A chat format whose special tokens the policy's tokenizer lacks (ChatML on the chat-world model's
    /// tokenizer.bin) is refused before the coordinator or any worker starts, naming the tokenizer.
    @Test func aChatFormatTheTokenizerCannotWriteIsRefusedBeforeAnythingStarts() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spec = """
        coordinator: tcp://127.0.0.1:*
        hosts:
          - name: here
            address: local
            workers: {generator: 1, learner: 1, reference-policy: 1}
        model:
          checkpoint: \(TestKit.repository)/models/chat-world/sft.bin
          chat_template: chatml
        task: {seed: 1}
        plan:
          - evaluate: {name: SFT}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("models/chat-world/tokenizer.bin: the chatml chat format writes <|im_start|>, which this tokenizer does not have"),
                "\(result.stdout)\(result.stderr)")
        #expect(!result.stdout.contains("coordinator listening"))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir + "/run/logs")) ?? []).isEmpty)
    }

    /// A data file the plan cannot use (a bad line; too few prompts to hold some out) is refused before
    /// the coordinator or any worker starts, naming the file and line.
    @Test func aBadDataFileIsRefusedBeforeAnythingStarts() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = (0..<40).map { #"{"prompt": "Tell me a story about a fox number \#($0)."}"# }
        for (name, lines, reason) in [("bad", good.prefix(2) + ["{not json"] + good.dropFirst(2), "prompts.jsonl:3: not a JSON object"),
                                      ("few", Array(good.prefix(5)), "5 prompts are too few to hold a tenth out")] {
            try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
            let spec = """
            coordinator: tcp://127.0.0.1:*
            hosts:
              - name: here
                workers: {generator: 1, learner: 1, reference-policy: 1}
            model: {checkpoint: \(TestKit.repository)/models/chat-world/sft.bin}
            task: {seed: 1}
            data: {prompts: prompts.jsonl}
            plan:
              - evaluate: {name: SFT}
            """
            try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
            let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run-\(name)"])
            #expect(result.status != 0)
            #expect(result.stderr.contains(reason), "\(name): \(result.stdout)\(result.stderr)")
            #expect(!result.stdout.contains("coordinator listening"), "\(name)")
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir + "/run-\(name)/logs")) ?? []).isEmpty)
        }
    }

    /// Pids of processes whose command line contains `needle` (from /proc).
    static func pids(matching needle: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let line = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return line.contains(needle) && !line.contains("pids(matching")
        }
    }

    @Test func interruptStopsEveryProcessWithinTwoSeconds() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A fixed port below the ephemeral range (32768-60999) that port * and outgoing connections draw from.
        let port = try TestKit.freePort()
        let spec = """
        coordinator: tcp://127.0.0.1:\(port)
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 2, learner: 1}
        model:
          checkpoint: \(Fixtures.model("tiny-gqa"))
        plan:
          - hold: {seconds: 60}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let out = dir + "/out", err = dir + "/err"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        let launch = Process()
        launch.executableURL = CLITests.executable
        launch.arguments = ["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"]
        launch.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        launch.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        try launch.run()
        defer { if launch.isRunning { launch.terminate() } }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("step 1 hold") {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let workers = LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)")
        #expect(workers.count == 3, "workers running: \(workers)")
        let interrupted = Date()
        kill(launch.processIdentifier, SIGINT)
        launch.waitUntilExit()
        let seconds = Date().timeIntervalSince(interrupted)
        #expect(seconds < 2.5, "launch took \(seconds) s to stop")
        #expect(launch.terminationStatus == 130)
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the launch")
        #expect(((try? String(contentsOfFile: err, encoding: .utf8)) ?? "").contains("stopped 3 workers and the coordinator"))
    }

    /// Request ids of the results in a run journal (each line's `"requestID":N`).
    static func journaledResults(_ path: String) -> [UInt64] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line -> UInt64? in
            guard let range = line.range(of: "\"requestID\":") else { return nil }
            return UInt64(line[range.upperBound...].prefix { $0.isNumber })
        }
    }

    @Test func aCoordinatorKilledMidStepResumesFromItsJournal() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 2, reward-model: 1, learner: 1, reference-policy: 1}
        model:
          checkpoint: \(Fixtures.model("tiny-gqa"))
        plan:
          - round: {prompts: 3, samples: 2, max_new_tokens: 8}
          - generate: {prompts: 64, samples: 2, max_new_tokens: 96}
          - round: {prompts: 3, samples: 2, max_new_tokens: 8}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        // The same plan undisturbed, for comparison.
        let calm = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/calm"])
        #expect(calm.status == 0, "\(calm.stdout)\(calm.stderr)")

        let journal = dir + "/run/journal.jsonl"
        let launch = Process()
        launch.executableURL = CLITests.executable
        launch.arguments = ["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"]
        launch.standardOutput = FileHandle.nullDevice
        launch.standardError = FileHandle.nullDevice
        try launch.run()
        // kill -9 once the generate step (step 2, request ids from 2 << 32) has a few results accepted.
        let step2 = (UInt64(2) << 32) ..< (UInt64(3) << 32)
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, LaunchTests.journaledResults(journal).filter({ step2.contains($0) }).count < 3, launch.isRunning {
            Thread.sleep(forTimeInterval: 0.01)
        }
        kill(launch.processIdentifier, SIGKILL)
        launch.waitUntilExit()
        let before = LaunchTests.journaledResults(journal)
        let text = (try? String(contentsOfFile: journal, encoding: .utf8)) ?? ""
        #expect(!text.contains("\"stepDone\":{\"index\":1"), "the kill came after step 2 had finished")
        let acceptedBefore = before.filter { step2.contains($0) }.count
        #expect(acceptedBefore >= 3 && acceptedBefore < 64)

        // Restarted with the same spec and run directory: it resumes.
        let resumed = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(resumed.status == 0, "\(resumed.stdout)\(resumed.stderr)")
        #expect(resumed.stdout.contains("steps 1-1 of 3 done, \(acceptedBefore) results of the step in progress already accepted"), "\(resumed.stdout)")
        #expect(resumed.stdout.contains("started 0 and adopted 5 running workers"), "\(resumed.stdout)")
        #expect(resumed.stdout.contains("step 1 was done before the restart"))
        // "all 5 workers registered and healthy 0.96 s after the coordinator started"
        let seconds = resumed.stdout.split(separator: "\n").first { $0.contains("registered and healthy") }
            .flatMap { line in line.components(separatedBy: "healthy ").last?.split(separator: " ").first.flatMap { Double($0) } }
        #expect((seconds ?? 99) < 5, "workers registered again \(seconds ?? -1) s after the coordinator came back")

        // Nothing accepted was lost or repeated: every result once, and each step's figures as undisturbed.
        let after = LaunchTests.journaledResults(journal)
        #expect(Set(after).count == after.count, "a result was accepted twice")
        #expect(Set(before).isSubset(of: Set(after)))
        // Step 2's 64 generate results and the learner's state saved at its end.
        #expect(after.filter { step2.contains($0) }.count == 65)
        /// The line of a step without its timings: what was produced, not how fast.
        func figures(_ out: String, _ prefix: String) -> String? {
            let timings = try! NSRegularExpression(pattern: "[0-9.]+ s\\b|\\([0-9]+ tok/s[^)]*\\)")
            return out.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { line in
                let text = String(line)
                return timings.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "")
            }
        }
        #expect(figures(resumed.stdout, "step 2 generate") != nil)
        #expect(figures(resumed.stdout, "step 2 generate") == figures(calm.stdout, "step 2 generate"))
        // The learner stepped once per round (v2 after two rounds) and the last round saw the same samples, scores and loss.
        #expect(figures(resumed.stdout, "step 3 round 2") != nil)
        #expect(figures(resumed.stdout, "step 3 round 2") == figures(calm.stdout, "step 3 round 2"), "\(resumed.stdout)")
        #expect(resumed.stdout.contains("policy v2 synced"))
        let endpointLine = try #require(text.split(separator: "\n").first { $0.contains("\"coordinator\":") })
        let start = try #require(endpointLine.range(of: "127.0.0.1:"))
        let port = String(endpointLine[start.upperBound...].prefix { $0.isNumber })
        #expect(!port.isEmpty)
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the resumed launch")
    }

    @Test func aWorkerThatCannotStartIsNamedAndLeavesNothingBehind() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A fixed port below the ephemeral range (32768-60999) that port * and outgoing connections draw from.
        let port = try TestKit.freePort()
        let spec = """
        coordinator: tcp://127.0.0.1:\(port)
        heartbeat_ms: 100
        hosts:
          - name: good
            workers: {generator: 2}
          - name: broken
            executable: /nonexistent/rlhf
            workers: {reward-model: 1}
        model:
          checkpoint: \(Fixtures.model("tiny-gqa"))
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("reward-model") && result.stderr.contains("broken"), "\(result.stderr)")
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the failed launch")
    }

    @Test func anEncryptedClusterRunsEveryRole() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in ["server", "worker"] {
            let keys = try CLITests.rlhf(["keys", "generate", "--out", "\(dir)/\(name)"])
            #expect(keys.status == 0, "\(keys.stderr)")
        }
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(dir)/worker.key")
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        curve: {server: server, client: worker}
        hosts:
          - name: here
            workers: {generator: 1, reward-model: 1, learner: 1, reference-policy: 1}
        model:
          checkpoint: \(Fixtures.model("tiny-gqa"))
        plan:
          - round: {prompts: 2, samples: 2, max_new_tokens: 6}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("policy v1 synced to 1 generators"), "\(result.stdout)")
        // A key pair that is missing is named with the command that makes it.
        try spec.replacingOccurrences(of: "client: worker", with: "client: nobody").write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = try CLITests.rlhf(["launch", dir + "/bad.yaml"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("curve.client") && bad.stderr.contains("rlhf keys generate"), "\(bad.stderr)")
    }

    @Test func badSpecsNameTheKey() throws {
        let dir = TestKit.scratch("launch")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let cases: [(String, String)] = [
            ("coordinator: tcp://127.0.0.1:*\nhosts:\n  - name: a\n    workers: {critic: 1}\nmodel: {checkpoint: \(Fixtures.model("tiny-gqa"))}\n", "hosts[0].workers.critic"),
            ("coordinator: 127.0.0.1\nhosts: []\n", "coordinator"),
            ("coordinator: tcp://127.0.0.1:*\nhosts:\n  - name: a\n    workers: {generator: 1}\nmodel: {checkpoint: /nonexistent.bin}\n", "model.checkpoint"),
            ("coordinator: tcp://127.0.0.1:*\nhosts:\n  - name: a\n    workers: {generator: 1}\nmodel: {checkpoint: \(Fixtures.model("tiny-gqa"))}\nplan:\n  - train: {}\n", "plan[0].train"),
            ("surprise: 1\n", "surprise"),
            ("[not, a, mapping\n", "(file)"),
        ]
        for (i, (text, key)) in cases.enumerated() {
            let path = dir + "/bad\(i).yaml"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let result = try CLITests.rlhf(["launch", path])
            #expect(result.status != 0)
            #expect(result.stderr.contains(key), "case \(i): \(result.stderr)")
        }
    }
}
