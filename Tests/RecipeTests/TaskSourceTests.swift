import EmbeddedTask
import LlamaCore
import LlamaTraining
import Recipe
import Testing
import TestKit

/// The plan's sources: the embedded task as one implementation (its judge is the hidden annotator,
/// verdict for verdict), and any other set of sources a plan can be built on.
@Suite struct TaskSourceTests {
    static let tokenizer = try! Tokenizer(path: TestKit.repository + "/models/chat-world/tokenizer.bin")

    @Test func theEmbeddedTaskJudgesAsItsAnnotatorDoes() throws {
        let task = EmbeddedTaskSource(seed: 1, tokenizer: TaskSourceTests.tokenizer, preferencePairs: 40)
        #expect(!task.trainPrompts.isEmpty && !task.evalPrompts.isEmpty && task.preferencePairs.count == 40)
        #expect(task.evalPrompts.contains(where: \.isSafety) && task.evalPrompts.contains { !$0.isSafety })
        let annotator = Annotator()
        for pair in task.preferencePairs.prefix(20) {
            let prompt = try #require(TaskPrompt.parse(pair.prompt))
            let chosen = annotator.judge(prompt, pair.chosen)
            let judged = try #require(task.judge(prompt: pair.prompt, response: pair.chosen))
            #expect(judged == Judgement(helpfulness: chosen.helpfulness, unsafe: chosen.unsafe, helpful: chosen.helpful))
            let verdict = task.compare(prompt: pair.prompt, pair.chosen, pair.rejected)
            switch annotator.compare(prompt, pair.chosen, pair.rejected) {
            case .first: #expect(verdict == .first)
            case .second: #expect(verdict == .second)
            case .tie: #expect(verdict == .tie)
            }
        }
        // A prompt the task's judge cannot read is not judged (nor compared).
        #expect(task.judge(prompt: "not a task prompt", response: "anything") == nil)
        #expect(task.compare(prompt: "not a task prompt", "a", "b") == nil)
        #expect(task.level(gap: 0.6) == .significantlyBetter && task.level(gap: 0.06) == .negligiblyBetter)
    }

    /// Prompts, pairs and a judge of a user's own (here: fixed in memory).
    struct Fixed: PromptSource, PairSource, JudgementSource {
        var trainPrompts: [PlanPrompt]
        var evalPrompts: [PlanPrompt]
        var preferencePairs: [PreferencePairText]
        func judge(prompt: String, response: String) -> Judgement? {
            Judgement(helpfulness: response.contains("please") ? 1 : 0, unsafe: response.contains("danger"), helpful: response.contains("please"))
        }
        func compare(prompt: String, _ a: String, _ b: String) -> Verdict? {
            let ja = judge(prompt: prompt, response: a)!.utility, jb = judge(prompt: prompt, response: b)!.utility
            return ja == jb ? .tie : ja > jb ? .first : .second
        }
        var tieGap: Double { 0.5 }
        func level(gap: Double) -> PreferenceLevel { gap >= 1 ? .significantlyBetter : .slightlyBetter }
    }

    @Test func aPlanRunsOnAnySources() {
        let tokenizer = TaskSourceTests.tokenizer
        let prompt = PlanPrompt(id: 0, text: "Say hello.", ids: ChatTemplate.promptIDs("Say hello.", tokenizer: tokenizer), isSafety: false)
        let fixed = Fixed(trainPrompts: [prompt], evalPrompts: [prompt],
                          preferencePairs: [PreferencePairText(prompt: "Say hello.", chosen: "hello please", rejected: "no", level: .better, safety: false)])
        let context = TaskContext(tokenizer: tokenizer, prompts: fixed, pairs: fixed, judge: fixed)
        #expect(context.trainPrompts == [prompt] && context.evalPrompts == [prompt])
        #expect(context.pairs.preferencePairs.first?.level == .better)
        #expect(context.judge.compare(prompt: "Say hello.", "hello please", "danger") == .first)
        #expect(context.judge.judge(prompt: "x", response: "danger")?.utility == -1)
    }
}
