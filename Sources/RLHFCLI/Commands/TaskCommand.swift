import ArgumentParser
import EmbeddedTask
import Foundation

/// `rlhf task`: the embedded task (a generated story world with a hidden annotator).
struct TaskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "task",
        abstract: "The embedded task: a generated world of short stories, its prompts, and a hidden annotator.",
        subcommands: [Generate.self, Judge.self]
    )

    /// `rlhf task generate`: writes the task's files.
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the corpus, SFT, preference and prompt files of the embedded task (deterministic in the seed).",
            discussion: """
            Files: corpus.txt (one document a line), sft.jsonl ({"prompt", "response"}), prefs.jsonl \
            ({"prompt", "chosen", "rejected", "preference", "safety"}), prompts/{train,validation,evaluation}.jsonl \
            ({"prompt", "safety"}) and manifest.json. The plan of cluster/local.yaml run from these files \
            (cluster/files.yaml: data: {prompts: prompts/train.jsonl, eval_prompts: prompts/evaluation.jsonl, \
            preferences: prefs.jsonl}, judge: {command: [rlhf, task, judge]}) is the embedded default's: its pairs \
            are the first pairs of prefs.jsonl (whatever the corpus and SFT sizes).
            """
        )

        @Option(help: "Directory to write to (created if missing).")
        var out: String
        @Option(help: "Seed of the data (the prompts and their splits are fixed; the answers and pairs follow the seed).")
        var seed: UInt64 = 1
        @Option(help: "Documents in the pretraining corpus.")
        var corpusDocuments = TaskData.Settings.default.corpusDocuments
        @Option(help: "Share of the corpus that is chat transcripts of training prompts (the rest: plain stories).")
        var corpusChatShare = TaskData.Settings.default.corpusChatShare
        @Option(help: "SFT examples.")
        var sftExamples = TaskData.Settings.default.sftExamples
        @Option(help: "Preference pairs.")
        var preferencePairs = TaskData.Settings.default.preferencePairs

        func validate() throws {
            try OptionCheck.number(corpusChatShare, "--corpus-chat-share", 0 ... 1)
            try OptionCheck.integer(corpusDocuments, "--corpus-documents", 0 ... 100_000_000)
            try OptionCheck.integer(sftExamples, "--sft-examples", 0 ... 100_000_000)
            try OptionCheck.integer(preferencePairs, "--preference-pairs", 0 ... 100_000_000)
        }

        func run() throws {
            var settings = TaskData.Settings.default
            settings.corpusDocuments = corpusDocuments
            settings.corpusChatShare = corpusChatShare
            settings.sftExamples = sftExamples
            settings.preferencePairs = preferencePairs
            let started = Date()
            let data = TaskData(seed: seed, settings: settings)
            do { try data.write(to: out) } catch { throw cliFailure(error) }
            let annotator = Annotator()
            let judged = data.sft.compactMap { example in TaskPrompt.parse(example.prompt).map { ($0, annotator.judge($0, example.response)) } }
            let stories = judged.filter { !$0.0.request.isSafety }, safety = judged.filter { $0.0.request.isSafety }
            print("wrote \(out): \(data.corpus.count) corpus documents, \(data.sft.count) SFT examples, \(data.preferences.count) preference pairs, "
                  + TaskSplit.allCases.map { "\(data.prompts[$0]?.count ?? 0) \($0.rawValue) prompts" }.joined(separator: ", "))
            if !stories.isEmpty && !safety.isEmpty {
                print(String(format: "SFT data as the annotator sees it: %.1f%% of story answers helpful, %.1f%% of safety answers unsafe",
                             100 * Double(stories.filter { $0.1.helpful }.count) / Double(stories.count),
                             100 * Double(safety.filter { $0.1.unsafe }.count) / Double(safety.count)))
            }
            print(String(format: "in %.1f s", Date().timeIntervalSince(started)))
        }
    }

    /// `rlhf task judge`: the hidden annotator as a judge command, for a spec's `judge:`.
    struct Judge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The embedded task's annotator as a judge command: JSON lines in, one judgement per line out.",
            discussion: """
            Reads {"prompt", "response"} per line on stdin (other fields are ignored) and answers each at once with \
            {"helpfulness": number, "unsafe": bool, "helpful": bool, "reward": helpfulness - 1 if unsafe}, or \
            {"reward": null} for a prompt that is not one of the task's. A line that is not such an object stops it \
            (status 1) naming the line. What a spec's judge: {command: [rlhf, task, judge]} runs.
            """
        )

        func run() throws {
            let annotator = Annotator()
            let out = FileHandle.standardOutput
            var number = 0
            while let line = readLine(strippingNewline: true) {
                number += 1
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let prompt = object["prompt"] as? String, let response = object["response"] as? String else {
                    printError("error: stdin line \(number): expected a JSON object with \"prompt\" and \"response\" strings")
                    throw ExitCode.failure
                }
                var answer: [String: Any] = ["reward": NSNull()]
                if let task = TaskPrompt.parse(prompt) {
                    let j = annotator.judge(task, response)
                    answer = ["helpfulness": j.helpfulness, "unsafe": j.unsafe, "helpful": j.helpful, "reward": j.utility]
                }
                try out.write(contentsOf: Data((jsonLine(answer) + "\n").utf8))
            }
        }
    }
}
