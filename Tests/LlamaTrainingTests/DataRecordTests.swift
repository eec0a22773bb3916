import Foundation
import LlamaCore
import Testing
import TestKit
@testable import LlamaTraining

/// The SFT and preference shapes TRL and OpenRLHF write, key remapping, and gzip files.
@Suite struct DataRecordTests {
    static func object(_ json: String) -> [String: Any] {
        try! JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
    }

    static let user = ChatTemplate.Message(role: .user, content: "Name an animal.")

    @Test func sftShapes() throws {
        let a = ChatTemplate.Message(role: .assistant, content: "A fox.")
        #expect(try SFTRecord(Self.object(#"{"prompt": "Name an animal.", "completion": "A fox."}"#)) == .conversation([Self.user, a]))
        #expect(try SFTRecord(Self.object(#"{"prompt": "Name an animal.", "response": "A fox."}"#)) == .conversation([Self.user, a]))
        // TRL's conversational prompt-completion.
        #expect(try SFTRecord(Self.object(#"{"prompt": [{"role": "user", "content": "Name an animal."}], "completion": [{"role": "assistant", "content": "A fox."}]}"#))
                == .conversation([Self.user, a]))
        #expect(try SFTRecord(Self.object(#"{"messages": [{"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "A fox."}]}"#))
                == .conversation([Self.user, a]))
        #expect(try SFTRecord(Self.object(#"{"text": "Once upon a time."}"#)) == .text("Once upon a time."))
        // Remapped keys.
        let keys = DataKeys(prompt: "question", messages: "dialog")
        #expect(try SFTRecord(Self.object(#"{"question": "Name an animal.", "completion": "A fox."}"#), keys: keys) == .conversation([Self.user, a]))
        #expect(try SFTRecord(Self.object(#"{"dialog": [{"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "A fox."}]}"#), keys: keys)
                == .conversation([Self.user, a]))
        #expect { try SFTRecord(Self.object(#"{"instruction": "x", "output": "y"}"#)) } throws: { "\($0)".contains("expected \"messages\", \"prompt\"") }
        #expect { try SFTRecord(Self.object(#"{"prompt": "x"}"#)) } throws: { "\($0)".contains("missing \"completion\"") }
    }

    @Test func preferenceShapes() throws {
        // LLaMA2's: a level, its margin from the table.
        let llama2 = try PreferenceRecord(Self.object(#"{"prompt": "Name an animal.", "chosen": "A fox.", "rejected": "No.", "preference": "better", "safety": true}"#))
        #expect(llama2.prompt == [Self.user] && llama2.chosen == "A fox." && llama2.rejected == "No." && llama2.level == .better && llama2.safety)
        // TRL's implicit prompt: shared messages before the last answer.
        let implicit = try PreferenceRecord(Self.object("""
        {"chosen": [{"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "A fox."}],
         "rejected": [{"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "No."}]}
        """))
        #expect(implicit.prompt == [Self.user] && implicit.chosen == "A fox." && implicit.rejected == "No." && implicit.level == nil && implicit.margin == nil)
        // TRL's explicit conversational, with a margin; OpenRLHF's remapped keys.
        let explicit = try PreferenceRecord(Self.object("""
        {"prompt": [{"role": "user", "content": "Name an animal."}], "chosen": [{"role": "assistant", "content": "A fox."}],
         "rejected": [{"role": "assistant", "content": "No."}], "margin": 1.5}
        """))
        #expect(explicit.prompt == [Self.user] && explicit.chosen == "A fox." && explicit.margin == 1.5)
        let remapped = try PreferenceRecord(Self.object(#"{"question": "Name an animal.", "response_j": "A fox.", "response_k": "No."}"#),
                                            keys: DataKeys(prompt: "question", chosen: "response_j", rejected: "response_k"))
        #expect(remapped.chosen == "A fox." && remapped.rejected == "No.")
        let bad: [(String, String)] = [
            (#"{"chosen": "a", "rejected": "b"}"#, "without it"),
            (#"{"chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}"#, "differ before their last answer"),
            (#"{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}"#, "\"margin\" must be a number"),
            (#"{"prompt": "p", "chosen": "a", "rejected": "b", "margin": true}"#, "\"margin\" must be a number"),
            (#"{"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": "b"}"#, "must end with the assistant's answer"),
        ]
        for (json, message) in bad {
            #expect { try PreferenceRecord(Self.object(json)) } throws: { "\($0)".contains(message) }
        }
    }

    /// The margin: explicit, else the level's, else none.
    @Test func marginsComeFromTheRecordOrTheTable() {
        let pair = { (level: PreferenceLevel?, margin: Float?) in
            PreferenceExample(chosen: [1], rejected: [2], level: level, margin: margin, safety: false, promptLength: 1)
        }
        #expect(pair(.significantlyBetter, nil).margin(.large) == 3)
        #expect(pair(.significantlyBetter, 0.25).margin(.large) == 0.25)
        #expect(pair(nil, nil).margin(.small) == 0 && pair(nil, nil).levelName == "unlabelled")
    }

    /// A gzip file reads as its contents; a corrupt one is refused naming the file.
    @Test func gzipFilesAreRead() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lines = (0..<50).map { #"{"prompt": "Name animal \#($0).", "completion": "A fox."}"# }.joined(separator: "\n") + "\n"
        try lines.write(toFile: dir + "/sft.jsonl", atomically: true, encoding: .utf8)
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-k", dir + "/sft.jsonl"]
        try gzip.run()
        gzip.waitUntilExit()
        let plain = try TrainingData.lines(dir + "/sft.jsonl"), zipped = try TrainingData.lines(dir + "/sft.jsonl.gz")
        #expect(plain.count == 50 && plain.map(\.text) == zipped.map(\.text))
        var corrupt = try Data(contentsOf: URL(fileURLWithPath: dir + "/sft.jsonl.gz"))
        corrupt = corrupt.prefix(corrupt.count / 2)
        try corrupt.write(to: URL(fileURLWithPath: dir + "/bad.jsonl.gz"))
        #expect { try TrainingData.lines(dir + "/bad.jsonl.gz") } throws: { "\($0)".contains("bad.jsonl.gz: not a readable gzip file") }
        // Two members one after another (cat a.gz b.gz) read as both; bytes after the last are refused.
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir + "/sft.jsonl.gz"))
        try (whole + whole).write(to: URL(fileURLWithPath: dir + "/twice.jsonl.gz"))
        #expect(try TrainingData.lines(dir + "/twice.jsonl.gz").map(\.text) == zipped.map(\.text) + zipped.map(\.text))
        try (whole + Data("junk".utf8)).write(to: URL(fileURLWithPath: dir + "/junk.jsonl.gz"))
        #expect { try TrainingData.lines(dir + "/junk.jsonl.gz") } throws: { "\($0)".contains("4 bytes follow the end") }
        var flipped = whole
        flipped[flipped.count / 2] ^= 0xFF
        try flipped.write(to: URL(fileURLWithPath: dir + "/flipped.jsonl.gz"))
        #expect(throws: (any Error).self) { try TrainingData.lines(dir + "/flipped.jsonl.gz") }
    }

    /// OpenRLHF's `output_key`: the answer under another name than `completion`.
    @Test func completionKeyRemapsTheAnswer() throws {
        let alpaca = DataKeys(prompt: "instruction", completion: "output")
        let record = Self.object(#"{"instruction": "Name an animal.", "input": "", "output": "A fox."}"#)
        #expect(try SFTRecord(record, keys: alpaca) == .conversation([Self.user, ChatTemplate.Message(role: .assistant, content: "A fox.")]))
        // A remapped key is the only one looked for, and the messages say so.
        #expect { try SFTRecord(Self.object(#"{"instruction": "x", "response": "y"}"#), keys: alpaca) } throws: {
            "\($0)".contains("missing \"output\" beside \"instruction\"") && !"\($0)".contains("response")
        }
        #expect { try SFTRecord(Self.object(#"{"question": "x"}"#), keys: alpaca) } throws: {
            "\($0)".contains("\"instruction\" with \"output\", or \"text\"")
        }
        #expect { try SFTRecord(Self.object(#"{"prompt": "x"}"#)) } throws: { "\($0)".contains("missing \"completion\" (or \"response\")") }
        // A record without the expected keys names the keys it has, so that the message says what to remap.
        #expect { try SFTRecord(Self.object(#"{"instruction": "x", "output": "y"}"#)) } throws: {
            "\($0)".hasSuffix("or \"text\" (the record's keys: \"instruction\", \"output\")")
        }
        #expect { try PreferenceRecord(Self.object(#"{"question": "x", "good": "y", "bad": "z"}"#)) } throws: {
            "\($0)".contains("missing \"chosen\" (the record's keys: \"bad\", \"good\", \"question\")")
        }
        #expect { try PromptRecord(Self.object(#"{}"#)) } throws: { "\($0)".contains("(the record is empty)") }
    }

    /// ShareGPT's conversations (`"conversations"` of `{"from", "value"}`, human and gpt) read as messages.
    @Test func shareGPTConversations() throws {
        let shareGPT = Self.object("""
        {"id": "1", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Name an animal."},
                                      {"from": "gpt", "value": "A fox."}]}
        """)
        let expected: [ChatTemplate.Message] = [ChatTemplate.Message(role: .system, content: "Be brief."), Self.user,
                                                ChatTemplate.Message(role: .assistant, content: "A fox.")]
        #expect(try SFTRecord(shareGPT) == .conversation(expected))
        // The same under a remapped key, and as a prompt ending with the user's turn.
        #expect(try SFTRecord(shareGPT, keys: DataKeys(messages: "conversations")) == .conversation(expected))
        let prompt = try PromptRecord(Self.object(#"{"conversations": [{"from": "human", "value": "Name an animal."}], "label": 3}"#))
        #expect(prompt.messages == [Self.user] && String(decoding: prompt.extras, as: UTF8.self) == #"{"label":3}"#)
        // A remapped key is the only one looked for.
        #expect { try SFTRecord(shareGPT, keys: DataKeys(messages: "dialog")) } throws: { "\($0)".contains("expected \"dialog\"") }
        #expect { try SFTRecord(Self.object(#"{"conversations": [{"from": "bot", "value": "x"}]}"#)) } throws: {
            "\($0)".contains("conversations[0]: \"from\" must be system, human or gpt")
        }
        #expect { try SFTRecord(Self.object(#"{"conversations": [{"from": "gpt", "text": "x"}]}"#)) } throws: {
            "\($0)".contains("conversations[0]: \"value\" must be a string")
        }
    }

    /// A file holding one JSON array of records (`json.dump` of a list, as Alpaca's data is) reads as
    /// its records, each bad one named by the line it starts on and skippable; gzip too.
    @Test func jsonArrayFilesAreRead() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = DataKeys(prompt: "instruction", completion: "output")
        let array = """
        \u{FEFF}[
          {
            "instruction": "Name an animal [any].",
            "input": "",
            "output": "A fox, said \\"the fox\\", {really}."
          },
          {"instruction": "Name a tree.", "input": "", "output": "An oak."},
          {
            "instruction": "No answer."
          },
          {"instruction": "Name a bird.", "output": "A crow."}
        ]

        """
        try array.write(toFile: dir + "/alpaca.json", atomically: true, encoding: .utf8)
        let read = { (path: String, policy: BadDataPolicy) in
            try TrainingData.records(path, policy: policy) { try SFTRecord($0, keys: keys) }
        }
        let (records, issues) = try read(dir + "/alpaca.json", .skip)
        #expect(records.map(\.line) == [2, 7, 11])
        #expect(records.first?.record == .conversation([ChatTemplate.Message(role: .user, content: "Name an animal [any]."),
                                                        ChatTemplate.Message(role: .assistant, content: "A fox, said \"the fox\", {really}.")]))
        #expect(issues.map(\.description) == [dir + "/alpaca.json:8: missing \"output\" beside \"instruction\""])
        #expect { try read(dir + "/alpaca.json", .stop) } throws: { "\($0)" == dir + "/alpaca.json:8: missing \"output\" beside \"instruction\"" }
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-k", dir + "/alpaca.json"]
        try gzip.run()
        gzip.waitUntilExit()
        #expect(try read(dir + "/alpaca.json.gz", .skip).records.map(\.line) == [2, 7, 11])
        #expect(try read(dir + "/alpaca.json", .skip).records.count == 3)
        try "[]\n".write(toFile: dir + "/empty.json", atomically: true, encoding: .utf8)
        #expect(try read(dir + "/empty.json", .stop).records.isEmpty)
        // A broken array is refused as a whole, naming the line.
        let broken: [(String, String)] = [
            ("[\n{\"instruction\": \"a\", \"output\": \"b\"},\n{\"instruction\": \"c\"", "broken.json:3: the array is not closed (the file ends before its ])"),
            ("[{\"instruction\": \"a\", \"output\": \"b\"},\n]", "broken.json:2: an empty element in the array (a comma before ])"),
            ("[{\"instruction\": \"a\", \"output\": \"b\"}]\n{\"x\": 1}", "broken.json:2: text after the array's closing ]"),
            ("[{\"instruction\": \"a\"}}]", "broken.json:1: an unmatched } after element 1"),
            ("[\"abc", "broken.json:1: the array is not closed (the file ends inside a string)"),
        ]
        for (text, message) in broken {
            try text.write(toFile: dir + "/broken.json", atomically: true, encoding: .utf8)
            #expect { try read(dir + "/broken.json", .skip) } throws: { "\($0)".hasSuffix(message) }
        }
        // Parquet (datasets' other format) is named, with what to write instead.
        try Data("PAR1\u{0}\u{0}".utf8).write(to: URL(fileURLWithPath: dir + "/train.parquet"))
        #expect { try read(dir + "/train.parquet", .skip) } throws: { "\($0)".contains("train.parquet is a Parquet file") }
    }
    /// A record's own `chat_template_kwargs` (TRL's column; SmolTalk2's `{"enable_thinking": false}`) renders
    /// that record, over the arguments the tokenizer has (the record's win); a bad one is the record's error.
    @Test func aRecordsTemplateArgumentsRenderIt() throws {
        let dir = try Fixtures.huggingFace("hf-bytebpe-gqa", template: try Fixtures.jinjaTemplate("qwen3"))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let thinking = try Tokenizer(path: dir)
        var direct = thinking
        try direct.useChatTemplateArguments(ChatTemplateArguments(["enable_thinking": .bool(false)]))
        let exchange = #""messages": [{"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "A fox."}]"#
        let lines = ["{\(exchange)}", #"{\#(exchange), "chat_template_kwargs": {"enable_thinking": false}}"#,
                     #"{\#(exchange), "chat_template_kwargs": {"enable_thinking": true}}"#,
                     #"{\#(exchange), "chat_template_kwargs": {"enable_thinkng": false}}"#, #"{\#(exchange), "chat_template_kwargs": 3}"#]
        let path = dir + "/sft.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let conversation = [ChatTemplate.Message(role: .user, content: "Name an animal."), ChatTemplate.Message(role: .assistant, content: "A fox.")]
        let record = SFTRecord.conversation(conversation)
        let (thought, plain) = (try TrainingData.sequence(record, tokenizer: thinking, seqLen: 256), try TrainingData.sequence(record, tokenizer: direct, seqLen: 256))
        #expect(thought != plain)
        for (base, expected) in [(thinking, [thought, plain, thought]), (direct, [plain, plain, thought])] {
            let (sequences, issues) = try TrainingData.sft(path, tokenizer: base, seqLen: 256, policy: .skip)
            #expect(sequences == expected)
            #expect(issues.map(\.line) == [4, 5])
            #expect(issues.first?.reason.contains("chat_template_kwargs: the model's chat template") == true
                    && issues.first?.reason.contains("never reads enable_thinkng") == true, "\(issues)")
            #expect(issues.last?.reason.contains("chat_template_kwargs: expected a mapping") == true, "\(issues)")
        }
        // A preference pair's prompt renders with its record's arguments too.
        try #"{"prompt": "Name an animal.", "chosen": "A fox.", "rejected": "No.", "chat_template_kwargs": {"enable_thinking": false}}"#
            .write(toFile: dir + "/prefs.jsonl", atomically: true, encoding: .utf8)
        let pairs = try TrainingData.preferences(dir + "/prefs.jsonl", tokenizer: thinking, seqLen: 256, policy: .stop).pairs
        let head = ChatTemplate.promptIDs("Name an animal.", tokenizer: direct)
        #expect(pairs.count == 1 && pairs[0].promptLength == head.count && pairs[0].chosen.starts(with: head))
    }
}
