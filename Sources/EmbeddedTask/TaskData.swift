import Foundation

/// The task's data, generated from a seed: the pretraining corpus, mixed-quality SFT examples,
/// preference pairs labelled by the annotator, and the three prompt sets. `write(to:)` lays them out
/// in the formats the trainers read.
public struct TaskData: Sendable {
    /// How much of each to make, and how good the SFT data is.
    public struct Settings: Sendable, Codable {
        /// Documents (lines) of the pretraining corpus.
        public var corpusDocuments = 40_000
        /// Share of the corpus that is chat transcripts of training prompts (the rest plain stories).
        public var corpusChatShare = 0.6
        /// SFT examples.
        public var sftExamples = 6_000
        /// Preference pairs.
        public var preferencePairs = 8_000
        /// Share of story answers in the SFT data without a flaw.
        public var sftGoodShare = 0.5
        /// Shares of safety answers in the SFT data: polite refusals, curt refusals (the rest comply).
        public var sftPoliteRefusalShare = 0.35
        public var sftCurtRefusalShare = 0.1

        /// The defaults.
        public static let `default` = Settings()
        public init() {}
    }

    /// One SFT example (the user's prompt and the response, before the chat template).
    public struct SFTExample: Codable, Equatable, Sendable {
        public var prompt: String
        public var response: String
    }

    /// One preference pair, as `rlhf train rm` reads it.
    public struct PreferencePair: Codable, Equatable, Sendable {
        public var prompt: String
        public var chosen: String
        public var rejected: String
        /// One of LLaMA2's four levels (`Annotator.Level`'s raw values).
        public var preference: String
        /// Whether the prompt is a safety prompt.
        public var safety: Bool
    }

    /// A prompt of one of the three sets.
    public struct PromptRecord: Codable, Equatable, Sendable {
        public var prompt: String
        public var safety: Bool
    }

    public let seed: UInt64
    public let settings: Settings
    public private(set) var corpus: [String] = []
    public private(set) var sft: [SFTExample] = []
    public private(set) var preferences: [PreferencePair] = []
    /// The prompts of each split, in the world's fixed order.
    public let prompts: [TaskSplit: [TaskPrompt]]

    /// Generates everything from `seed`.
    public init(seed: UInt64, settings: Settings = .default) {
        self.seed = seed
        self.settings = settings
        prompts = Dictionary(grouping: TaskPrompt.all, by: \.split)
        let train = prompts[.train] ?? []
        let writer = ResponseWriter()
        let annotator = Annotator()
        var random = TaskRandom(seed: seed)
        for _ in 0..<settings.corpusDocuments {
            if random.unit() < settings.corpusChatShare {
                let prompt = random.pick(train)
                corpus.append("[INST] \(prompt.text) [/INST] \(TaskData.sftResponse(prompt, writer, settings, &random))")
            } else {
                corpus.append(writer.corpusStory(random: &random))
            }
        }
        for _ in 0..<settings.sftExamples {
            let prompt = random.pick(train)
            sft.append(SFTExample(prompt: prompt.text, response: TaskData.sftResponse(prompt, writer, settings, &random)))
        }
        // The pairs draw from a stream of their own, so that they do not depend on how much corpus and SFT
        // data is made: the RLHF plan's pairs (`EmbeddedTaskSource`, no corpus, no SFT data) are the
        // first pairs of prefs.jsonl.
        var pairRandom = TaskRandom(seed: seed)
        while preferences.count < settings.preferencePairs {
            let prompt = pairRandom.pick(train)
            let a = TaskData.pairResponse(prompt, writer, &pairRandom), b = TaskData.pairResponse(prompt, writer, &pairRandom)
            let ja = annotator.judge(prompt, a), jb = annotator.judge(prompt, b)
            let gap = abs(ja.utility - jb.utility)
            // Equal answers teach nothing (LLaMA2's raters also chose between distinct responses).
            guard a != b, gap > 1e-9 else { continue }
            let (chosen, rejected) = ja.utility > jb.utility ? (a, b) : (b, a)
            preferences.append(PreferencePair(prompt: prompt.text, chosen: chosen, rejected: rejected,
                                              preference: Annotator.level(gap: gap).rawValue, safety: prompt.request.isSafety))
        }
    }

    /// A response of the SFT data's mixed quality.
    static func sftResponse(_ prompt: TaskPrompt, _ writer: ResponseWriter, _ settings: Settings, _ random: inout TaskRandom) -> String {
        switch prompt.request {
        case .story:
            if random.unit() < settings.sftGoodShare { return writer.story(for: prompt.request, random: &random) }
            return writer.story(for: prompt.request, flaws: randomFlaws(&random), random: &random)
        case .harmful:
            let u = random.unit()
            let answer: ResponseWriter.SafetyAnswer = u < settings.sftPoliteRefusalShare ? .politeRefusal
                : (u < settings.sftPoliteRefusalShare + settings.sftCurtRefusalShare ? .curtRefusal : .comply)
            return writer.answer(to: prompt.request, with: answer, random: &random)
        }
    }

    /// One side of a preference pair: any answer, good or flawed, safe or not.
    static func pairResponse(_ prompt: TaskPrompt, _ writer: ResponseWriter, _ random: inout TaskRandom) -> String {
        switch prompt.request {
        case .story:
            if random.below(3) == 0 { return writer.story(for: prompt.request, random: &random) }
            return writer.story(for: prompt.request, flaws: randomFlaws(&random), random: &random)
        case .harmful:
            return writer.answer(to: prompt.request, with: random.pick(ResponseWriter.SafetyAnswer.allCases), random: &random)
        }
    }

    /// One or two flaws (rarely an over-refusal).
    static func randomFlaws(_ random: inout TaskRandom) -> Set<ResponseWriter.Flaw> {
        if random.below(20) == 0 { return [.overRefusal] }
        let kinds = ResponseWriter.Flaw.allCases.filter { $0 != .overRefusal }
        var flaws: Set<ResponseWriter.Flaw> = [random.pick(kinds)]
        if random.below(2) == 0 { flaws.insert(random.pick(kinds)) }
        return flaws
    }

    /// Writes `corpus.txt` (one document a line), `sft.jsonl`, `prefs.jsonl` and
    /// `prompts/{train,validation,evaluation}.jsonl` under `directory`, and `manifest.json` with the
    /// seed, the settings and the counts.
    public func write(to directory: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory + "/prompts", withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func lines<T: Encodable>(_ items: [T]) throws -> Data {
            var data = Data()
            for item in items {
                data.append(try encoder.encode(item))
                data.append(0x0A)
            }
            return data
        }
        try Data((corpus.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: directory + "/corpus.txt"))
        try lines(sft).write(to: URL(fileURLWithPath: directory + "/sft.jsonl"))
        try lines(preferences).write(to: URL(fileURLWithPath: directory + "/prefs.jsonl"))
        for split in TaskSplit.allCases {
            let records = (prompts[split] ?? []).map { PromptRecord(prompt: $0.text, safety: $0.request.isSafety) }
            try lines(records).write(to: URL(fileURLWithPath: directory + "/prompts/\(split.rawValue).jsonl"))
        }
        struct Manifest: Encodable {
            let seed: UInt64
            let settings: Settings
            let counts: [String: Int]
        }
        var counts = ["corpus": corpus.count, "sft": sft.count, "prefs": preferences.count]
        for split in TaskSplit.allCases { counts["prompts/\(split.rawValue)"] = prompts[split]?.count ?? 0 }
        encoder.outputFormatting.insert(.prettyPrinted)
        try encoder.encode(Manifest(seed: seed, settings: settings, counts: counts))
            .write(to: URL(fileURLWithPath: directory + "/manifest.json"))
    }
}
