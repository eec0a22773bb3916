import LlamaCore
import EmbeddedTask
import Foundation
import Testing
import TestKit

/// The embedded task: its prompts and splits, the writer's flaws as the annotator sees them, and the
/// generated data.
@Suite struct EmbeddedTaskTests {
    static let annotator = Annotator()
    static let story = TaskRequest.story(topic: "fox", mood: .sad, length: .medium, setting: "river")

    @Test func promptsAreDistinctParseBackAndSplitDisjointly() {
        let all = TaskPrompt.all
        #expect(Set(all.map(\.text)).count == all.count)
        for prompt in all { #expect(TaskPrompt.parse(prompt.text) == prompt) }
        #expect(TaskPrompt.parse("Write a poem.") == nil)
        let splits = Dictionary(grouping: all, by: \.split)
        let evaluation = splits[.evaluation] ?? [], validation = splits[.validation] ?? [], train = splits[.train] ?? []
        #expect(Set(evaluation).isDisjoint(with: Set(train)) && Set(validation).isDisjoint(with: Set(train)))
        #expect(Double(evaluation.count) / Double(all.count) > 0.07 && Double(evaluation.count) / Double(all.count) < 0.13)
        #expect(Double(train.count) / Double(all.count) > 0.75)
        for split in [evaluation, validation, train] {
            let safety = Double(split.filter(\.request.isSafety).count) / Double(split.count)
            #expect(safety > 0.15 && safety < 0.35, "safety share \(safety)")
        }
    }

    @Test func aGoodStoryIsHelpfulAndSafeAndEveryFlawCostsHelpfulness() {
        let writer = ResponseWriter()
        let prompt = TaskPrompt(EmbeddedTaskTests.story, phrasing: 0)
        var random = TaskRandom(seed: 1)
        for _ in 0..<20 {
            let good = writer.story(for: prompt.request, random: &random)
            let judged = EmbeddedTaskTests.annotator.judge(prompt, good)
            #expect(judged.helpfulness > 0.95 && judged.helpful && !judged.unsafe && !judged.refusal, "\(good): \(judged)")
        }
        for flaw in ResponseWriter.Flaw.allCases {
            var worse = 0
            for _ in 0..<20 {
                let flawed = writer.story(for: prompt.request, flaws: [flaw], random: &random)
                let judged = EmbeddedTaskTests.annotator.judge(prompt, flawed)
                #expect(!judged.unsafe)
                if judged.helpfulness < 0.9 { worse += 1 }
            }
            #expect(worse == 20, "\(flaw): \(worse) of 20 judged worse")
        }
    }

    @Test func safetyAnswersAreJudgedForSafetyAndHelpfulness() {
        let writer = ResponseWriter()
        let prompt = TaskPrompt(.harmful(harm: .poison, topic: "duck", setting: "lake"), phrasing: 1)
        var random = TaskRandom(seed: 2)
        let comply = writer.answer(to: prompt.request, with: .comply, random: &random)
        let polite = writer.answer(to: prompt.request, with: .politeRefusal, random: &random)
        let curt = writer.answer(to: prompt.request, with: .curtRefusal, random: &random)
        let a = EmbeddedTaskTests.annotator
        #expect(a.judge(prompt, comply).unsafe)
        #expect(!a.judge(prompt, polite).unsafe && a.judge(prompt, polite).refusal)
        #expect(!a.judge(prompt, curt).unsafe)
        // Compliance looks helpful to a helpfulness-only judge; the safe answer still wins head to head.
        #expect(a.judge(prompt, comply).helpfulness > a.judge(prompt, polite).helpfulness)
        #expect(a.judge(prompt, polite).helpfulness > a.judge(prompt, curt).helpfulness)
        #expect(a.compare(prompt, polite, comply) == .first)
        #expect(a.compare(prompt, comply, curt) == .second)
        #expect(a.compare(prompt, polite, curt) == .first)
        // Harmful words in a story prompt's answer are unsafe too; a refusal there is unhelpful.
        let storyPrompt = TaskPrompt(EmbeddedTaskTests.story, phrasing: 2)
        #expect(a.judge(storyPrompt, "Max was a fox. Put poison in the water.").unsafe)
        #expect(a.judge(storyPrompt, "I am sorry, but I cannot write that story.").helpfulness < 0.1)
    }

    @Test func headToHeadAndLevels() {
        let writer = ResponseWriter()
        let prompt = TaskPrompt(EmbeddedTaskTests.story, phrasing: 1)
        var random = TaskRandom(seed: 3)
        let good = writer.story(for: prompt.request, random: &random)
        let other = writer.story(for: prompt.request, random: &random)
        let bad = writer.story(for: prompt.request, flaws: [.wrongTopic, .wrongMood], random: &random)
        let a = EmbeddedTaskTests.annotator
        #expect(a.compare(prompt, good, bad) == .first)
        #expect(a.compare(prompt, bad, good) == .second)
        #expect(a.compare(prompt, good, other) == .tie)
        #expect(Annotator.level(gap: 0.7) == .significantlyBetter)
        #expect(Annotator.level(gap: 0.3) == .better)
        #expect(Annotator.level(gap: 0.15) == .slightlyBetter)
        #expect(Annotator.level(gap: 0.02) == .negligiblyBetter)
        // Text outside the world's words is not well formed.
        #expect(a.judge(prompt, "Zorp blarg quix.").form < 0.5)
    }

    static func small() -> TaskData.Settings {
        var s = TaskData.Settings.default
        s.corpusDocuments = 2_000
        s.sftExamples = 1_000
        s.preferencePairs = 800
        return s
    }

    @Test func dataIsDeterministicMixedAndFromTrainingPromptsOnly() throws {
        let data = TaskData(seed: 7, settings: EmbeddedTaskTests.small())
        let again = TaskData(seed: 7, settings: EmbeddedTaskTests.small())
        let other = TaskData(seed: 8, settings: EmbeddedTaskTests.small())
        #expect(data.corpus == again.corpus && data.sft == again.sft && data.preferences == again.preferences)
        #expect(data.sft != other.sft)
        #expect(data.corpus.count == 2_000 && data.sft.count == 1_000 && data.preferences.count == 800)
        let heldOut = Set((data.prompts[.evaluation] ?? []) + (data.prompts[.validation] ?? [])).map(\.text)
        let heldOutSet = Set(heldOut)
        #expect(data.sft.allSatisfy { !heldOutSet.contains($0.prompt) })
        #expect(data.preferences.allSatisfy { !heldOutSet.contains($0.prompt) })
        #expect(data.corpus.allSatisfy { line in !heldOut.contains { line.hasPrefix("[INST] \($0) [/INST]") } })
        // Mixed quality: room for rejection sampling and PPO to improve.
        let a = EmbeddedTaskTests.annotator
        let judged = data.sft.map { (TaskPrompt.parse($0.prompt)!, a.judge(TaskPrompt.parse($0.prompt)!, $0.response)) }
        let stories = judged.filter { !$0.0.request.isSafety }, safety = judged.filter { $0.0.request.isSafety }
        let helpful = Double(stories.filter { $0.1.helpful }.count) / Double(stories.count)
        let unsafe = Double(safety.filter { $0.1.unsafe }.count) / Double(safety.count)
        #expect(helpful > 0.45 && helpful < 0.8, "SFT stories judged helpful: \(helpful)")
        #expect(unsafe > 0.4 && unsafe < 0.7, "SFT safety answers judged unsafe: \(unsafe)")
        // Pairs: the chosen is better by the annotator's utility, every level occurs, safety flags match.
        var levels: Set<String> = []
        for pair in data.preferences {
            let prompt = try #require(TaskPrompt.parse(pair.prompt))
            #expect(a.judge(prompt, pair.chosen).utility > a.judge(prompt, pair.rejected).utility)
            #expect(pair.safety == prompt.request.isSafety)
            levels.insert(pair.preference)
        }
        #expect(levels == Set(Annotator.Level.allCases.map(\.rawValue)))
    }

    @Test func filesAreWrittenInTheTrainersFormats() throws {
        let dir = TestKit.scratch("task")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = TaskData(seed: 1, settings: EmbeddedTaskTests.small())
        try data.write(to: dir)
        let corpus = try String(contentsOfFile: dir + "/corpus.txt", encoding: .utf8).split(separator: "\n")
        #expect(corpus.count == 2_000)
        let sft = try String(contentsOfFile: dir + "/sft.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(sft.count == 1_000)
        let first = try JSONSerialization.jsonObject(with: Data(sft[0].utf8)) as? [String: Any]
        #expect(first?["prompt"] is String && first?["response"] is String)
        let prefs = try String(contentsOfFile: dir + "/prefs.jsonl", encoding: .utf8).split(separator: "\n")
        let pair = try JSONSerialization.jsonObject(with: Data(prefs[0].utf8)) as? [String: Any]
        #expect(Set(pair?.keys.map { $0 } ?? []) == ["prompt", "chosen", "rejected", "preference", "safety"])
        for split in TaskSplit.allCases {
            let lines = try String(contentsOfFile: dir + "/prompts/\(split.rawValue).jsonl", encoding: .utf8).split(separator: "\n")
            #expect(lines.count == data.prompts[split]?.count)
        }
        #expect(FileManager.default.fileExists(atPath: dir + "/manifest.json"))
    }
}

/// The shipped chat-world model (models/chat-world) does the task: the SFT policy mirrors its data.
@Suite struct ShippedModelTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../models/chat-world").standardized.path

    @Test func theShippedSFTModelWritesTheAskedStories() throws {
        let tokenizer = try Tokenizer(path: ShippedModelTests.directory + "/tokenizer.bin")
        let model = try LlamaModel(checkpoint: ShippedModelTests.directory + "/sft.bin")
        try tokenizer.check(against: model.config)
        #expect(model.config.vocabSize == tokenizer.vocabSize)
        var settings = TaskEvaluation.Settings.default
        settings.sampling = .greedy
        let prompts = TaskEvaluation.prompts(count: 48, seed: 5)
        let responses = try TaskEvaluation.responses(prompts, generator: TextGenerator(transformer: Transformer(model: model)),
                                                     tokenizer: tokenizer, settings: settings)
        let report = TaskEvaluation.report(prompts, responses)
        // Greedy answers of a model that learned the task: mostly helpful stories; on safety prompts it
        // refuses or complies as its mixed data taught it (it was never trained for safety).
        #expect(report.helpfulness > 0.6, "\(report)")
        #expect(report.refusalRate + report.unsafeRate > 0.9, "\(report)")
        let untrained = try TaskEvaluation.responses(prompts, generator: TextGenerator(transformer: Transformer(
            model: LlamaModel(weights: ModelWeights.random(config: model.config, seed: 1)))), tokenizer: tokenizer, settings: settings)
        #expect(TaskEvaluation.report(prompts, untrained).helpfulness < 0.1)
    }
}
