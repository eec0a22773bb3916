import ClusterRuntime
import EmbeddedTask
import Foundation
import LlamaTraining
import Wire
import Workers

/// A judge that is an external command (the spec's `judge: {command: ...}`), spoken to in JSON lines:
/// it reads `{"prompt", "response"}` per line on stdin and answers one object per line:
/// `{"helpfulness": number, "unsafe": bool, "helpful": bool}` (`rlhf task judge` answers so for the
/// embedded task) or just `{"reward": number}` (then helpfulness is the reward, the answer is safe, and
/// helpful from `helpful_above`). `{"reward": null}` says the judge cannot judge that prompt. Any other
/// answer, a crash or a timeout fails the step, naming the command and its stderr.
public struct CommandJudge: JudgementSource {
    /// How the answers are read into judgements.
    public struct Settings: Sendable, Equatable {
        /// Helpfulness closer than this is a tie (no preference pair, half a win); the annotator's by default.
        public var tieGap = Annotator.tieGap
        /// The gaps of LLaMA2's four levels for the preference pairs the judge labels.
        public var levels = LevelThresholds.annotator
        /// Helpfulness from which an answer without a `helpful` flag counts as helpful.
        public var helpfulAbove = Annotator.helpfulThreshold
        /// Seconds one batch may take.
        public var timeoutSeconds = 600.0

        public init() {}
    }

    public let command: JSONLineCommand
    public let settings: Settings

    /// A judge running `arguments` (in `directory`).
    public init(arguments: [String], directory: String? = nil, settings: Settings = Settings()) {
        command = JSONLineCommand(arguments: arguments, timeoutSeconds: settings.timeoutSeconds, directory: directory)
        self.settings = settings
    }

    public var tieGap: Double { settings.tieGap }

    public func level(gap: Double) -> PreferenceLevel { settings.levels.level(gap: gap) }

    public func judge(_ items: [JudgeItem]) throws -> [Judgement?] {
        let answers = try command.call(items.map(CommandJudge.request))
        return try answers.enumerated().map { i, answer in
            do {
                return try CommandJudge.judgement(answer, helpfulAbove: settings.helpfulAbove)
            } catch let reason as JSONLineCommand.Failure {
                throw JSONLineCommand.Failure(description: "judge \(command.commandLine): answer \(i + 1) of \(items.count): \(reason)")
            }
        }
    }

    /// One request line: the prompt record's fields (labels, ground truth), then `prompt`, `response` and
    /// `messages` (the prompt's conversation, ending with the user turn `prompt`).
    static func request(_ item: JudgeItem) -> [String: Any] {
        var line = (try? JSONSerialization.jsonObject(with: Data(item.fieldsJSON.utf8)) as? [String: Any]) ?? [:]
        line["prompt"] = item.prompt
        line["response"] = item.response
        line["messages"] = item.messages.map { ["role": $0.role.rawValue, "content": $0.content] }
        return line
    }

    /// One answer as a judgement (nil: the judge cannot judge it).
    static func judgement(_ answer: [String: Any], helpfulAbove: Double) throws -> Judgement? {
        func number(_ key: String) throws -> Double? {
            switch answer[key] {
            case nil, is NSNull: return nil
            case let value?:
                guard let x = JSONLineCommand.finiteNumber(value) else {
                    throw JSONLineCommand.Failure(description: "\"\(key)\" is not a finite number: \(value)")
                }
                return x
            }
        }
        func flag(_ key: String) throws -> Bool? {
            switch answer[key] {
            case nil, is NSNull: return nil
            case let n as NSNumber where String(cString: n.objCType) == "c": return n.boolValue
            case let other?: throw JSONLineCommand.Failure(description: "\"\(key)\" is not true or false: \(other)")
            }
        }
        guard answer["helpfulness"] != nil || answer["reward"] != nil else {
            throw JSONLineCommand.Failure(description: "expected {\"reward\": number} or {\"helpfulness\": number, \"unsafe\": bool}, got "
                                          + String(describing: answer))
        }
        guard let helpfulness = try number("helpfulness") ?? number("reward") else { return nil }
        return Judgement(helpfulness: helpfulness, unsafe: try flag("unsafe") ?? false, helpful: try flag("helpful") ?? (helpfulness >= helpfulAbove))
    }
}

/// The spec's reward function as the judge (`judge: {source: reward-function}`): each answer's reward is its
/// helpfulness (safe; helpful from `helpful_above`), asked of the reward-function workers.
public struct RewardFunctionJudge: JudgementSource {
    let coordinator: Coordinator
    public let settings: CommandJudge.Settings

    public init(coordinator: Coordinator, settings: CommandJudge.Settings = CommandJudge.Settings()) {
        self.coordinator = coordinator
        self.settings = settings
    }

    public var tieGap: Double { settings.tieGap }

    public func level(gap: Double) -> PreferenceLevel { settings.levels.level(gap: gap) }

    public func judge(_ items: [JudgeItem]) throws -> [Judgement?] {
        // Each answer with its prompt's id and fields, as the reward function sees it when it rewards.
        let rewards = try coordinator.functionRewards(items.enumerated().map { i, item in
            RewardItem(promptID: item.promptID, sampleID: UInt64(i), prompt: item.prompt, response: item.response, fieldsJSON: item.fieldsJSON,
                       messages: item.messages)
        })
        return rewards.map { Judgement(helpfulness: Double($0), unsafe: false, helpful: Double($0) >= settings.helpfulAbove) }
    }
}
