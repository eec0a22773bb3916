import Foundation
import Testing
import TestKit
@testable import LlamaCore
@testable import LlamaTraining

/// The trainers behind `rlhf train`: data readers, the chat template, the loop's resume, and that each
/// objective learns.
@Suite struct TrainerTests {
    /// A byte-level tokenizer (every character falls back to its UTF-8 bytes): ids 3...258 are bytes.
    static let bytes: Tokenizer = {
        let pieces: [[UInt8]] = [Array("<unk>".utf8), Array("<s>".utf8), Array("</s>".utf8)] + (0..<256).map { Array(String(format: "<0x%02X>", $0).utf8) }
        let kinds: [Tokenizer.PieceKind] = [.unknown, .control, .control] + Array(repeating: .byte, count: 256)
        return Tokenizer(pieces: pieces, scores: Array(repeating: 0, count: pieces.count), kinds: kinds)
    }()

    static func file(_ lines: [String]) throws -> String {
        let path = TestKit.scratch("trainer") + ".jsonl"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func chatTemplateMasksTheAnswersAndTheirEOS() throws {
        let t = TrainerTests.bytes
        #expect(ChatTemplate.instruction("Hi", system: "Be brief.") == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]")
        let (ids, isAnswer) = try ChatTemplate.encode([.init(role: .user, content: "Hi"), .init(role: .assistant, content: "Yo"),
                                                        .init(role: .user, content: "Again")], tokenizer: t)
        let first = [t.bosId] + t.encode("[INST] Hi [/INST]")
        let answer = t.encode("Yo") + [t.eosId]
        #expect(Array(ids.prefix(first.count + answer.count)) == first + answer)
        #expect(isAnswer.filter { $0 }.count == answer.count)
        #expect(Array(isAnswer[first.count ..< first.count + answer.count]).allSatisfy { $0 })
        #expect(ids.last == t.encode("Again [/INST]").last)
        #expect(throws: LlamaError.self) { _ = try ChatTemplate.encode([.init(role: .assistant, content: "x")], tokenizer: t) }
        #expect(throws: LlamaError.self) {
            _ = try ChatTemplate.encode([.init(role: .user, content: "a"), .init(role: .user, content: "b")], tokenizer: t)
        }
    }

    @Test func badLinesAreNamedByFileAndLineAndSkippedOnlyWhenAsked() throws {
        let path = try TrainerTests.file([
            #"{"prompt": "Hi", "response": "Hello"}"#,
            #"{"prompt": "Hi", "response": "   "}"#,
            "not json",
            "",
            #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
            #"{"messages": [{"role": "robot", "content": "a"}]}"#,
            #"{"prompt": "Hi", "response": "\#(String(repeating: "long ", count: 80))"}"#,
        ])
        do {
            _ = try TrainingData.sft(path, tokenizer: TrainerTests.bytes, seqLen: 128, policy: .stop)
            Issue.record("bad data was accepted")
        } catch let issue as DataIssue {
            #expect(issue.line == 2 && issue.reason.contains("empty response"), "\(issue)")
            #expect(issue.description.hasPrefix(path + ":2:"))
        }
        let (kept, issues) = try TrainingData.sft(path, tokenizer: TrainerTests.bytes, seqLen: 128, policy: .skip)
        #expect(kept.count == 2)
        #expect(issues.map(\.line) == [2, 3, 6, 7])
        #expect(issues[1].reason.contains("not a JSON object"))
        #expect(issues[2].reason.contains("role"))
        #expect(issues[3].reason.contains("longer than seq_len 128"))
        // The loss is on the answer only: the mask selects "Hello" and EOS.
        #expect(kept[0].mask.filter { $0 == 1 }.count == TrainerTests.bytes.encode("Hello").count + 1)

        let prefs = try TrainerTests.file([
            #"{"prompt": "p", "chosen": "a", "rejected": "b", "preference": "better", "safety": false}"#,
            #"{"prompt": "p", "chosen": "a", "rejected": "b", "preference": "much_better"}"#,
            #"{"prompt": "p", "chosen": "", "rejected": "b", "preference": "better"}"#,
            #"{"prompt": "q", "chosen": "a", "rejected": "b", "preference": "slightly_better", "safety": true}"#,
        ])
        let (pairs, pairIssues) = try TrainingData.preferences(prefs, tokenizer: TrainerTests.bytes, seqLen: 64, policy: .skip)
        #expect(pairs.count == 2 && pairIssues.map(\.line) == [2, 3])
        #expect(pairIssues[0].reason.contains("preference"))
        let (safety, _) = try TrainingData.preferences(prefs, tokenizer: TrainerTests.bytes, seqLen: 64, subset: .safety, policy: .skip)
        #expect(safety.count == 1 && safety[0].safety && safety[0].level == .slightlyBetter)
        #expect(throws: DataIssue.self) { _ = try TrainingData.preferences(prefs, tokenizer: TrainerTests.bytes, seqLen: 64, policy: .stop) }
    }

    /// A field of the wrong type is named as such (not as missing), a safety flag must be a boolean, and a
    /// line that is not UTF-8 is a bad line (it was read with replacement characters, its text changed).
    @Test func wrongTypesAndBrokenUTF8AreBadLines() throws {
        var bytes = Data(#"{"prompt": "Hi", "response": "Hello"}"#.utf8) + Data([0x0A])
        bytes += Data(#"{"prompt": 5, "response": "Hello"}"#.utf8) + Data([0x0A])
        bytes += Data(#"{"prompt": "caf"#.utf8) + Data([0xC3, 0x28]) + Data(#"", "response": "x"}"#.utf8) + Data([0x0A])
        bytes += Data(#"{"prompt": "Hi", "response": null}"#.utf8)
        let path = TestKit.scratch("trainer") + ".jsonl"
        try bytes.write(to: URL(fileURLWithPath: path))
        let (kept, issues) = try TrainingData.sft(path, tokenizer: TrainerTests.bytes, seqLen: 128, policy: .skip)
        #expect(kept.count == 1)
        #expect(issues.map(\.line) == [2, 3, 4])
        #expect(issues[0].reason == "\"prompt\" must be a string or a list of messages, got a number", "\(issues[0])")
        #expect(issues[1].reason == "not valid UTF-8", "\(issues[1])")
        #expect(issues[2].reason == "\"response\" must be a string or a list of messages, got null", "\(issues[2])")
        let prefs = try TrainerTests.file([
            #"{"prompt": "p", "chosen": "a", "rejected": "b", "preference": "better", "safety": "yes"}"#,
            #"{"prompt": "p", "chosen": ["a"], "rejected": "b", "preference": "better"}"#,
            #"{"prompt": "p", "chosen": "a", "rejected": "b", "preference": "better", "safety": 1}"#,
        ])
        let (pairs, pairIssues) = try TrainingData.preferences(prefs, tokenizer: TrainerTests.bytes, seqLen: 64, policy: .skip)
        #expect(pairs.isEmpty)
        #expect(pairIssues.map(\.reason) == ["\"safety\" must be true or false, got a string", "chosen[0]: expected {\"role\", \"content\"}",
                                             "\"safety\" must be true or false, got a number"])
    }

    static func model(seed: UInt64 = 3) -> ModelWeights {
        ModelWeights.random(config: LlamaConfig(dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 259, seqLen: 64), seed: seed)
    }

    static func sequences() -> [MaskedSequence] {
        (0..<12).map { i in
            let ids: [Int32] = [1] + (0..<(6 + i % 5)).map { Int32(3 + ($0 * 7 + i) % 40) } + [2]
            return MaskedSequence(ids: ids, mask: Array(repeating: 1, count: ids.count - 1))
        }
    }

    @Test func anInterruptedRunResumesToTheSameWeights() throws {
        var settings = TrainerSettings.default
        settings.batchSize = 4
        settings.steps = 8
        settings.learningRate = 3e-3
        let data = TrainerTests.sequences()
        let dir = TestKit.scratch("resume")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let straight = TrainableTransformer(weights: TrainerTests.model())
        var losses: [Double] = []
        #expect(try Trainers.languageModel(straight, data: data, settings: settings, statePath: dir + "/a.state",
                                           progress: { losses.append($0.loss) }) == .finished)
        #expect(losses.count == 8 && losses.last! < losses.first!)

        let first = TrainableTransformer(weights: TrainerTests.model())
        var steps = 0
        let outcome = try Trainers.languageModel(first, data: data, settings: settings, statePath: dir + "/b.state",
                                                 progress: { steps = $0.step }, shouldStop: { steps == 3 })
        #expect(outcome == .interrupted(step: 3))
        let state = try TrainingState.read(path: dir + "/b.state")
        #expect(state.step == 3 && state.dataPosition == 12)
        let resumed = TrainableTransformer(weights: state.weights)
        var resumedLosses: [Double] = []
        #expect(try Trainers.languageModel(resumed, data: data, settings: settings, statePath: dir + "/b.state", resume: state,
                                           progress: { resumedLosses.append($0.loss) }) == .finished)
        #expect(resumedLosses == Array(losses.dropFirst(3)))
        #expect(resumed.weights.storage.array(0..<resumed.weights.storage.count) == straight.weights.storage.array(0..<straight.weights.storage.count))
    }

    @Test func aRewardModelLearnsTheRankingAndItsHeadResumes() throws {
        // Chosen answers end in token 10, rejected ones in token 20: a ranking the model can learn.
        let pairs = (0..<24).map { i -> PreferenceExample in
            let prompt: [Int32] = [1, Int32(3 + i % 9), Int32(5 + i % 4)]
            return PreferenceExample(chosen: prompt + [Int32(30 + i % 3), 10, 2], rejected: prompt + [Int32(30 + i % 3), 20, 2],
                                     level: PreferenceLevel.allCases[i % 4], safety: false, promptLength: 3)
        }
        var settings = TrainerSettings.default
        settings.batchSize = 8
        settings.steps = 30
        settings.learningRate = 3e-3
        settings.warmupFraction = 0
        let model = TrainableTransformer(weights: TrainerTests.model())
        var head = ScalarHead(dim: 32, seed: 1)
        let before = try Trainers.rankingAccuracy(model, head: head, pairs: pairs)
        let path = TestKit.scratch("rm") + ".state"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var losses: [Double] = []
        _ = try Trainers.rewardModel(model, head: &head, pairs: pairs, margins: .small, settings: settings, statePath: path,
                                     progress: { losses.append($0.loss) })
        let after = try Trainers.rankingAccuracy(model, head: head, pairs: pairs)
        let correct = after.values.reduce(0) { $0 + $1.correct }
        #expect(correct == 24, "accuracy after training: \(after), before: \(before)")
        #expect(losses.last! < losses.first!)
        let state = try TrainingState.read(path: path)
        #expect(state.heads["reward"] == head)
        let (train, heldOut) = Trainers.heldOutSplit(pairs, heldOutShare: 0.3)
        #expect(train.count + heldOut.count == 24 && !heldOut.isEmpty && !train.isEmpty)
    }
}
