import Foundation
import LlamaCore

/// What to do with a bad line of training data.
public enum BadDataPolicy: String, CaseIterable, Codable, Sendable {
    /// Refuse the file: the first bad line stops the command with its file and line number.
    case stop
    /// Skip the line, and report it (file, line, reason) and the count.
    case skip
}

/// A bad line of a training file: where and why.
public struct DataIssue: Error, CustomStringConvertible, Equatable, Sendable {
    public let file: String
    public let line: Int
    public let reason: String
    public var description: String { "\(file):\(line): \(reason)" }
}

/// One tokenized training sequence with the weight of each target: `ids` `(T)`, `mask` `(T-1)`
/// (1 where target `t + 1` is trained on).
public struct MaskedSequence: Sendable, Equatable {
    public var ids: [Int32]
    public var mask: [Float]
}

/// One tokenized preference pair: prompt and answer together for the chosen and the rejected
/// response, the margin's level, and whether it is a safety pair.
public struct PreferenceExample: Sendable, Equatable {
    public var chosen: [Int32]
    public var rejected: [Int32]
    public var level: PreferenceLevel
    public var safety: Bool
    /// Tokens of the prompt at the start of both sides.
    public var promptLength: Int
}

/// Which preference pairs a reward model trains on.
public enum PreferenceSubset: String, CaseIterable, Codable, Sendable {
    /// Every pair.
    case all
    /// Pairs not flagged `safety` (the helpfulness reward model).
    case helpfulness
    /// Pairs flagged `safety` (the safety reward model).
    case safety
}

/// Readers of the trainers' files. Every bad line is reported with its file and line; with
/// `BadDataPolicy.stop` the first one is thrown, with `.skip` all are returned beside the data.
public enum TrainingData {
    /// The non-empty lines of `path` with their 1-based numbers.
    /// The file's non-blank lines, numbered from 1; the text of a line that is not valid UTF-8 is nil
    /// (a bad line: read with replacement characters, its text would silently change).
    static func lines(_ path: String) throws -> [(number: Int, text: Substring?)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LlamaError.invalidInput("cannot read \(path)")
        }
        var out: [(Int, Substring?)] = []
        var number = 0
        for bytes in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            number += 1
            guard let line = String(validating: bytes, as: UTF8.self) else {
                out.append((number, nil))
                continue
            }
            let trimmed = line.hasSuffix("\r") ? line.dropLast() : Substring(line)
            if !trimmed.allSatisfy(\.isWhitespace) { out.append((number, trimmed)) }
        }
        return out
    }

    /// The text of a line, or the error of one that is not UTF-8.
    static func utf8(_ text: Substring?) throws -> Substring {
        guard let text else { throw LlamaError.invalidInput("not valid UTF-8") }
        return text
    }

    /// A string field of a JSON line: missing and of another type are told apart.
    static func string(_ object: [String: Any], _ key: String, orElse alternative: String = "") throws -> String {
        guard let value = object[key] else { throw LlamaError.invalidInput("missing \"\(key)\"\(alternative)") }
        guard let text = value as? String else { throw LlamaError.invalidInput("\"\(key)\" must be a string, got \(jsonKind(value))") }
        return text
    }

    /// What a JSON value is, for messages.
    static func jsonKind(_ value: Any) -> String {
        switch value {
        case is NSNull: return "null"
        case is String: return "a string"
        case is [Any]: return "a list"
        case is [String: Any]: return "an object"
        // JSONSerialization gives booleans as NSNumbers of type char ("c").
        case let n as NSNumber: return String(cString: n.objCType) == "c" ? "a boolean" : "a number"
        default: return "\(type(of: value))"
        }
    }

    /// Applies `policy` to a bad line.
    static func reject(_ issue: DataIssue, _ policy: BadDataPolicy, into issues: inout [DataIssue]) throws {
        if policy == .stop { throw issue }
        issues.append(issue)
    }

    /// A plain-text corpus, one document a line: each `BOS + tokens + EOS`, all trained on. A document
    /// longer than `seqLen` tokens is a bad line.
    public static func corpus(_ path: String, tokenizer: Tokenizer, seqLen: Int, policy: BadDataPolicy) throws -> (sequences: [MaskedSequence], issues: [DataIssue]) {
        var out: [MaskedSequence] = [], issues: [DataIssue] = []
        for (number, line) in try lines(path) {
            guard let text = line else {
                try reject(DataIssue(file: path, line: number, reason: "not valid UTF-8"), policy, into: &issues)
                continue
            }
            let ids = [tokenizer.bosId] + tokenizer.encode(String(text)) + [tokenizer.eosId]
            guard ids.count <= seqLen else {
                try reject(DataIssue(file: path, line: number, reason: "\(ids.count) tokens, longer than seq_len \(seqLen)"), policy, into: &issues)
                continue
            }
            out.append(MaskedSequence(ids: ids, mask: Array(repeating: 1, count: ids.count - 1)))
        }
        return (out, issues)
    }

    /// SFT data: JSON lines `{"prompt", "response"}` or `{"messages": [{"role", "content"}, ...]}`, in
    /// LLaMA2's chat format; the loss is on the answers' tokens only (the prompt's loss zeroed).
    public static func sft(_ path: String, tokenizer: Tokenizer, seqLen: Int, policy: BadDataPolicy) throws -> (sequences: [MaskedSequence], issues: [DataIssue]) {
        var out: [MaskedSequence] = [], issues: [DataIssue] = []
        for (number, line) in try lines(path) {
            do {
                let messages = try sftMessages(try utf8(line))
                let (ids, isAnswer) = try ChatTemplate.encode(messages, tokenizer: tokenizer)
                guard isAnswer.contains(true) else { throw LlamaError.invalidInput("no assistant answer to train on") }
                guard ids.count <= seqLen else { throw LlamaError.invalidInput("\(ids.count) tokens, longer than seq_len \(seqLen)") }
                out.append(MaskedSequence(ids: ids, mask: isAnswer.dropFirst().map { $0 ? 1 : 0 }))
            } catch {
                try reject(DataIssue(file: path, line: number, reason: reason(error)), policy, into: &issues)
            }
        }
        return (out, issues)
    }

    /// The messages of one SFT line.
    static func sftMessages(_ line: Substring) throws -> [ChatTemplate.Message] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LlamaError.invalidInput("not a JSON object")
        }
        if let messages = object["messages"] {
            guard let list = messages as? [[String: Any]], !list.isEmpty else {
                throw LlamaError.invalidInput("\"messages\" must be a non-empty list of {\"role\", \"content\"}")
            }
            return try list.enumerated().map { i, m in
                guard let roleName = m["role"] as? String, let role = ChatTemplate.Role(rawValue: roleName) else {
                    throw LlamaError.invalidInput("message \(i + 1): \"role\" must be system, user or assistant")
                }
                guard let content = m["content"] as? String else { throw LlamaError.invalidInput("message \(i + 1): \"content\" must be a string") }
                return ChatTemplate.Message(role: role, content: content)
            }
        }
        let prompt = try string(object, "prompt", orElse: " (or \"messages\")")
        let response = try string(object, "response")
        guard !response.allSatisfy(\.isWhitespace) else { throw LlamaError.invalidInput("empty response") }
        return [ChatTemplate.Message(role: .user, content: prompt), ChatTemplate.Message(role: .assistant, content: response)]
    }

    /// Preference pairs: JSON lines `{"prompt", "chosen", "rejected", "preference", "safety"}`; each
    /// side is the chat-formatted prompt followed by the answer and EOS (the score is read at EOS).
    public static func preferences(_ path: String, tokenizer: Tokenizer, seqLen: Int, subset: PreferenceSubset = .all,
                                   policy: BadDataPolicy) throws -> (pairs: [PreferenceExample], issues: [DataIssue]) {
        var out: [PreferenceExample] = [], issues: [DataIssue] = []
        for (number, line) in try lines(path) {
            do {
                guard let o = try? JSONSerialization.jsonObject(with: Data(try utf8(line).utf8)) as? [String: Any] else {
                    throw LlamaError.invalidInput("not a JSON object")
                }
                let prompt = try string(o, "prompt")
                let chosen = try string(o, "chosen"), rejected = try string(o, "rejected")
                guard !chosen.allSatisfy(\.isWhitespace) else { throw LlamaError.invalidInput("empty \"chosen\"") }
                guard !rejected.allSatisfy(\.isWhitespace) else { throw LlamaError.invalidInput("empty \"rejected\"") }
                guard let name = o["preference"] as? String, let level = PreferenceLevel(rawValue: name) else {
                    throw LlamaError.invalidInput("\"preference\" must be one of \(PreferenceLevel.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                if let flag = o["safety"], jsonKind(flag) != "a boolean" {
                    throw LlamaError.invalidInput("\"safety\" must be true or false, got \(jsonKind(flag))")
                }
                let safety = o["safety"] as? Bool ?? false
                if subset == .helpfulness && safety || subset == .safety && !safety { continue }
                let head = ChatTemplate.promptIDs(prompt, tokenizer: tokenizer)
                let c = head + tokenizer.encode(chosen) + [tokenizer.eosId], r = head + tokenizer.encode(rejected) + [tokenizer.eosId]
                guard max(c.count, r.count) <= seqLen else {
                    throw LlamaError.invalidInput("\(max(c.count, r.count)) tokens, longer than seq_len \(seqLen)")
                }
                out.append(PreferenceExample(chosen: c, rejected: r, level: level, safety: safety, promptLength: head.count))
            } catch {
                try reject(DataIssue(file: path, line: number, reason: reason(error)), policy, into: &issues)
            }
        }
        return (out, issues)
    }

    static func reason(_ error: any Error) -> String {
        if case let LlamaError.invalidInput(text) = error { return text }
        return "\(error)"
    }
}
