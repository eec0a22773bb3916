import Foundation
import LlamaCore
import LlamaTraining

/// The spec's `data:` section: a user's prompt, preference and SFT files as the plan's sources. JSON lines
/// as `datasets`' `to_json` writes them (gzip accepted), in the shapes `PromptRecord` and
/// `PreferenceRecord` read, with the key names remapped by `keys`.
public struct DataFiles: Sendable, Equatable {
    /// Training prompts (rejection sampling, PPO).
    public var prompts: String?
    /// Held-out prompts of the evaluations; nil: a tenth of `prompts` is held out (by a hash of the
    /// prompt's text, the same tenth `train_rm` holds out of the pairs).
    public var evalPrompts: String?
    /// The reward models' first preference pairs (`train_rm`).
    public var preferences: String?
    /// The demonstrations of the plan's `sft` step.
    public var sft: String?
    public var keys = DataKeys()
    /// What a bad line does: stop the launch naming it, or skip it (each listed, with a count).
    public var onBadData = BadDataPolicy.stop

    public init(prompts: String? = nil, evalPrompts: String? = nil, preferences: String? = nil) {
        self.prompts = prompts
        self.evalPrompts = evalPrompts
        self.preferences = preferences
    }
}

/// Prompts, preference pairs and demonstrations read from `DataFiles`, in the tokenizer's chat template.
public struct FileDataSource: PromptSource, PairSource, SFTSource {
    public let trainPrompts: [PlanPrompt]
    public let evalPrompts: [PlanPrompt]
    public let preferencePairs: [PreferencePairText]
    /// The `sft` step's demonstrations, at most `seqLen` tokens each.
    public let demonstrations: [MaskedSequence]
    /// The bad lines skipped (with `onBadData: skip`).
    public let skipped: [DataIssue]
    private let seqLen: Int

    /// No prompts and no pairs (a plan whose spec names none of either needs none).
    public static let none = FileDataSource(trainPrompts: [], evalPrompts: [], preferencePairs: [], skipped: [])

    private init(trainPrompts: [PlanPrompt], evalPrompts: [PlanPrompt], preferencePairs: [PreferencePairText], skipped: [DataIssue]) {
        self.trainPrompts = trainPrompts
        self.evalPrompts = evalPrompts
        self.preferencePairs = preferencePairs
        self.skipped = skipped
        demonstrations = []
        seqLen = 0
    }

    /// Reads `files` for a model of context `seqLen`; prompts and demonstrations that do not fit are
    /// bad lines. A source it does not name is empty (the plan takes it from elsewhere).
    public init(files: DataFiles, tokenizer: Tokenizer, seqLen: Int) throws {
        let maxPromptTokens = seqLen
        self.seqLen = seqLen
        var skipped: [DataIssue] = []
        var templates = RecordTemplates(tokenizer)
        func prompts(_ path: String?) throws -> [PlanPrompt] {
            guard let path else { return [] }
            let (records, issues) = try TrainingData.records(path, policy: files.onBadData) { object -> (PromptRecord, [Int32]) in
                let record = try PromptRecord(object, keys: files.keys)
                let ids = try FileDataSource.promptIDs(record.messages, tokenizer: try templates.tokenizer(for: object))
                guard ids.count < maxPromptTokens else {
                    throw LlamaError.invalidInput("the prompt is \(ids.count) tokens, and the model's context is \(maxPromptTokens)")
                }
                return (record, ids)
            }
            skipped += issues
            guard !records.isEmpty else { throw LlamaError.invalidInput("\(path): no prompts") }
            return records.enumerated().map { i, entry in
                PlanPrompt(id: UInt64(i), text: entry.record.0.text, ids: entry.record.1, isSafety: entry.record.0.safety,
                           fieldsJSON: String(decoding: entry.record.0.extras, as: UTF8.self), messages: entry.record.0.messages)
            }
        }
        let all = try prompts(files.prompts)
        if files.evalPrompts != nil || all.isEmpty {
            trainPrompts = all
            evalPrompts = try prompts(files.evalPrompts)
        } else {
            func renumbered(_ prompts: [PlanPrompt]) -> [PlanPrompt] {
                prompts.enumerated().map { i, p in
                    var prompt = p
                    prompt.id = UInt64(i)
                    return prompt
                }
            }
            trainPrompts = renumbered(all.filter { !RLHFPipeline.isHeldOut($0.text) })
            evalPrompts = renumbered(all.filter { RLHFPipeline.isHeldOut($0.text) })
            guard !trainPrompts.isEmpty, !evalPrompts.isEmpty else {
                throw LlamaError.invalidInput("\(files.prompts!): \(all.count) prompts are too few to hold a tenth out for evaluation (give eval_prompts)")
            }
        }
        if let path = files.preferences {
            let (records, issues) = try TrainingData.records(path, policy: files.onBadData) { object -> PreferencePairText in
                let record = try PreferenceRecord(object, keys: files.keys)
                let own = try templates.tokenizer(for: object)
                // A lone user turn rendered as the plan's tokenizer renders it is left to the plan (nil).
                let plain = record.prompt.count == 1 && record.prompt[0].role == .user && object[RecordTemplates.key] == nil
                return PreferencePairText(prompt: record.prompt.last?.content ?? "", chosen: record.chosen, rejected: record.rejected,
                                          level: record.level, margin: record.margin, safety: record.safety,
                                          promptIDs: plain ? nil : try FileDataSource.promptIDs(record.prompt, tokenizer: own))
            }
            skipped += issues
            guard !records.isEmpty else { throw LlamaError.invalidInput("\(path): no preference pairs") }
            preferencePairs = records.map(\.record)
        } else {
            preferencePairs = []
        }
        if let path = files.sft {
            let (sequences, issues) = try TrainingData.sft(path, tokenizer: tokenizer, seqLen: seqLen, policy: files.onBadData, keys: files.keys)
            skipped += issues
            guard !sequences.isEmpty else { throw LlamaError.invalidInput("\(path): no SFT examples") }
            demonstrations = sequences
        } else {
            demonstrations = []
        }
        self.skipped = skipped
    }

    public func sftSequences(seqLen: Int) throws -> [MaskedSequence] {
        guard seqLen >= self.seqLen else { throw LlamaError.invalidInput("the SFT data was read for a context of \(self.seqLen) tokens, not \(seqLen)") }
        return demonstrations
    }

    /// A prompt's tokens: a lone user message as the embedded task's prompts are (LLaMA2's template
    /// with the default system prompt where the format has one), a conversation as it is.
    static func promptIDs(_ messages: [ChatTemplate.Message], tokenizer: Tokenizer) throws -> [Int32] {
        if messages.count == 1, messages[0].role == .user { return ChatTemplate.promptIDs(messages[0].content, tokenizer: tokenizer) }
        return try ChatTemplate.promptIDs(conversation: messages, tokenizer: tokenizer)
    }
}
