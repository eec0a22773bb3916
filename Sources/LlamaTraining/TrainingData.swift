private import CompressNIO
import Foundation
import LlamaCore
private import NIOCore

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
/// response, LLaMA2's preference level and an explicit margin (either may be absent: a pair from a
/// TRL file has neither, and no margin), and whether it is a safety pair.
public struct PreferenceExample: Sendable, Equatable {
    public var chosen: [Int32]
    public var rejected: [Int32]
    public var level: PreferenceLevel?
    public var margin: Float?
    public var safety: Bool
    /// Tokens of the prompt at the start of both sides.
    public var promptLength: Int

    public init(chosen: [Int32], rejected: [Int32], level: PreferenceLevel?, margin: Float? = nil, safety: Bool, promptLength: Int) {
        self.chosen = chosen
        self.rejected = rejected
        self.level = level
        self.margin = margin
        self.safety = safety
        self.promptLength = promptLength
    }

    /// The ranking loss's margin: the explicit one, else the level's in `table`, else 0.
    public func margin(_ table: MarginTable) -> Float {
        margin ?? level.map(table.margin) ?? 0
    }

    /// The accuracy report's group: the level's name, or `unlabelled`.
    public var levelName: String { level?.rawValue ?? "unlabelled" }
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
    /// The file's bytes, through zlib where it is a gzip file (`datasets`' `to_json(...,
    /// compression="gzip")`). A Parquet file is refused naming what to write instead.
    static func contents(_ path: String) throws -> Data {
        guard var data = FileManager.default.contents(atPath: path) else {
            throw LlamaError.invalidInput("cannot read \(path)")
        }
        if data.starts(with: [0x1F, 0x8B]) { data = try gunzip(data, path: path) }
        if data.starts(with: Array("PAR1".utf8)) {
            throw LlamaError.invalidInput("\(path) is a Parquet file; data files are JSON lines or a JSON array (with `datasets`: "
                                          + "load_dataset(\"parquet\", data_files=...)[\"train\"].to_json(\"data.jsonl\"))")
        }
        return data
    }

    /// The file's non-blank lines, numbered from 1; the text of a line that is not valid UTF-8 is nil
    /// (a bad line: read with replacement characters, its text would silently change). A gzip file is
    /// read through zlib.
    static func lines(_ path: String) throws -> [(number: Int, text: Substring?)] {
        lines(of: try contents(path))
    }

    /// The non-blank lines of `data`, numbered from 1 (nil for a line that is not valid UTF-8).
    static func lines(of data: Data) -> [(number: Int, text: Substring?)] {
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

    /// The contents of a gzip file (members one after another, as `cat a.gz b.gz` makes, are read in
    /// turn); a truncated or corrupt file, or bytes after the last member, are refused naming the file.
    /// zlib checks each member's CRC and length itself; the loop here tells a member's end from input that
    /// stops early, which `ByteBuffer.decompress(with:)` does not.
    static func gunzip(_ data: Data, path: String) throws -> Data {
        func refuse(_ reason: String) -> LlamaError {
            LlamaError.invalidInput("\(path): not a readable gzip file (\(reason))")
        }
        var input = ByteBuffer(bytes: data)
        var output = ByteBufferAllocator().buffer(capacity: max(4 * data.count, 1 << 16))
        let decompressor = CompressionAlgorithm.gzip().decompressor
        do {
            try decompressor.startStream()
            defer { try? decompressor.finishStream() }
            while true {
                do {
                    // Returns at a member's end, or having used all the input; throws when the output is
                    // full (progress kept: grow and go on) or when no input is left to make progress with.
                    try decompressor.streamInflate(from: &input, to: &output)
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    output.reserveCapacity(minimumWritableBytes: output.capacity)
                    continue
                } catch let error as CompressNIOError where error == .inputBufferOverflow {
                    throw refuse("it ends in the middle of its data: truncated?")
                }
                if input.readableBytes == 0 {
                    // At a member's end another call returns again; a stream cut short has nothing to go on.
                    do {
                        try decompressor.streamInflate(from: &input, to: &output)
                    } catch let error as CompressNIOError where error == .inputBufferOverflow {
                        throw refuse("it ends in the middle of its data: truncated?")
                    }
                    break
                }
                guard input.readableBytesView.starts(with: [0x1F, 0x8B]) else {
                    throw refuse("\(input.readableBytes) bytes follow the end of its gzip data")
                }
                try decompressor.resetStream()
            }
        } catch let error as LlamaError {
            throw error
        } catch {
            throw refuse("\(error)")
        }
        return Data(output.readableBytesView)
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

    /// SFT data: JSON lines in any `SFTRecord` shape (`{"messages"}`, `{"prompt", "completion"}`,
    /// `{"prompt", "response"}`, `{"text"}`), conversations in the tokenizer's chat format (with a
    /// record's own `chat_template_kwargs`, `RecordTemplates`) with the loss on the answers' tokens
    /// only; a `text` record is `BOS + tokens + EOS`, all trained on.
    public static func sft(_ path: String, tokenizer: Tokenizer, seqLen: Int, policy: BadDataPolicy,
                           keys: DataKeys = DataKeys()) throws -> (sequences: [MaskedSequence], issues: [DataIssue]) {
        var templates = RecordTemplates(tokenizer)
        let (read, issues) = try records(path, policy: policy) { object -> MaskedSequence in
            try sequence(SFTRecord(object, keys: keys), tokenizer: try templates.tokenizer(for: object), seqLen: seqLen)
        }
        return (read.map(\.record), issues)
    }

    /// One SFT record in tokens: a conversation in the tokenizer's chat format with the loss on the
    /// answers' tokens only; a `text` record `BOS + tokens + EOS`, all trained on. Refuses a record with
    /// no answer or longer than `seqLen`.
    public static func sequence(_ record: SFTRecord, tokenizer: Tokenizer, seqLen: Int) throws -> MaskedSequence {
        let sequence: MaskedSequence
        switch record {
        case let .conversation(messages):
            let (ids, isAnswer) = try ChatTemplate.encode(messages, tokenizer: tokenizer)
            guard isAnswer.contains(true) else { throw LlamaError.invalidInput("no assistant answer to train on") }
            sequence = MaskedSequence(ids: ids, mask: isAnswer.dropFirst().map { $0 ? 1 : 0 })
        case let .text(text):
            let ids = [tokenizer.bosId] + tokenizer.encode(text) + [tokenizer.eosId]
            sequence = MaskedSequence(ids: ids, mask: Array(repeating: 1, count: ids.count - 1))
        }
        guard sequence.ids.count <= seqLen else { throw LlamaError.invalidInput("\(sequence.ids.count) tokens, longer than seq_len \(seqLen)") }
        return sequence
    }

    /// A line as a JSON object.
    static func object(_ line: Substring) throws -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LlamaError.invalidInput("not a JSON object")
        }
        return object
    }

    /// Preference pairs: JSON lines in any `PreferenceRecord` shape (LLaMA2's `{"prompt", "chosen",
    /// "rejected", "preference", "safety"}`, TRL's and OpenRLHF's with strings or conversations, an
    /// optional `margin`); each side is the chat-formatted prompt followed by the answer and the chat
    /// format's end of turn (`Tokenizer.endOfTurnId`; the score is read there).
    public static func preferences(_ path: String, tokenizer: Tokenizer, seqLen: Int, subset: PreferenceSubset = .all,
                                   policy: BadDataPolicy, keys: DataKeys = DataKeys()) throws -> (pairs: [PreferenceExample], issues: [DataIssue]) {
        var templates = RecordTemplates(tokenizer)
        let (read, issues) = try records(path, policy: policy) { object -> PreferenceExample? in
            let record = try PreferenceRecord(object, keys: keys)
            if subset == .helpfulness && record.safety || subset == .safety && !record.safety { return nil }
            let head = try ChatTemplate.promptIDs(conversation: record.prompt, tokenizer: try templates.tokenizer(for: object))
            let end = tokenizer.endOfTurnId
            let c = head + tokenizer.encode(record.chosen) + [end], r = head + tokenizer.encode(record.rejected) + [end]
            guard max(c.count, r.count) <= seqLen else {
                throw LlamaError.invalidInput("\(max(c.count, r.count)) tokens, longer than seq_len \(seqLen)")
            }
            return PreferenceExample(chosen: c, rejected: r, level: record.level, margin: record.margin, safety: record.safety,
                                     promptLength: head.count)
        }
        return (read.compactMap(\.record), issues)
    }

    /// The records of a JSON-lines file, or of a file holding one JSON array of records (as
    /// `json.dump` writes a list, and `datasets`' `load_dataset("json")` reads: Alpaca's data, for one),
    /// gzip accepted, read by `read`, each with the line it starts on; a bad record is named
    /// `file:line: reason` and, with `.skip`, listed beside the records.
    public static func records<Record>(_ path: String, policy: BadDataPolicy,
                                       _ read: ([String: Any]) throws -> Record) throws -> (records: [(line: Int, record: Record)], issues: [DataIssue]) {
        var out: [(Int, Record)] = [], issues: [DataIssue] = []
        let data = try contents(path)
        let entries: [(number: Int, text: Substring?)]
        if JSONArrayScanner.startsWithArray(data) {
            do {
                entries = try JSONArrayScanner.elements(of: data).map { ($0.line, $0.text) }
            } catch let error as JSONArrayScanner.Malformed {
                throw LlamaError.invalidInput("\(path):\(error.line): \(error.reason)")
            }
        } else {
            entries = lines(of: data)
        }
        for (number, line) in entries {
            do {
                out.append((number, try read(try object(try utf8(line)))))
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
