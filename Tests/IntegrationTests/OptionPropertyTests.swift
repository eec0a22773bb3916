import ClusterRuntime
import ArgumentParser
import Foundation
import PropertyBased
@testable import RLHFCLI
import Testing

/// Every numeric option of every `rlhf` command under random values: parsed (with `validate()`) as
/// the executable parses them, a value is taken exactly when it is a number of the option's type in
/// the option's range, and refused otherwise with a message naming the option. In process: a crash
/// would end the test run.
@Suite struct OptionPropertyTests {
    enum Kind: Sendable {
        case integer(ClosedRange<Int>)
        /// Comma-separated thread counts, each in 1...256.
        case threadList
        case seed
        /// A finite number in the range, without its lower (upper) bound where open.
        case number(ClosedRange<Double>, openBelow: Bool = false, openAbove: Bool = false, float: Bool = false)
    }

    struct Case: Sendable {
        /// The command's name (`train sft`) and the arguments that make it parse.
        let name: String
        let command: [String]
        let option: String
        let kind: Kind
    }

    /// Arguments that make each command parse, before the option under test.
    static let bases: [String: [String]] = [
        "generate": ["generate", "--checkpoint", "m.bin", "--prompt-ids", "1"],
        "eval": ["eval", "--checkpoint", "m.bin", "--reward-model", "rm.bin"],
        "train sft": ["train", "sft", "--data", "d.jsonl", "--init", "m.bin", "--out", "o.bin"],
        "train rm": ["train", "rm", "--data", "d.jsonl", "--init", "m.bin", "--out", "o.bin"],
        "train pretrain": ["train", "pretrain", "--corpus", "c.txt", "--config", "dim=8", "--out", "o.bin"],
        "checkpoint init": ["checkpoint", "init", "--out", "o.bin"],
        "tokenizer train": ["tokenizer", "train", "--corpus", "c.txt", "--vocab-size", "300", "--out", "t.bin"],
        "task generate": ["task", "generate", "--out", "dir"],
        "task judge": ["task", "judge"],
        "worker": ["worker", "--role", "generator", "--coordinator", "tcp://127.0.0.1:1"],
        "coordinator": ["coordinator"],
        "status": ["status"],
        "launch": ["launch"],
        "bench generate": ["bench", "generate"],
        "bench rollout": ["bench", "rollout"],
        "bench train": ["bench", "train"],
        "bench tokenize": ["bench", "tokenize", "--tokenizer", "t.bin"],
        "bench transport": ["bench", "transport"],
        "bench fanout": ["bench", "fanout"],
        "bench load": ["bench", "load"],
        "chat render": ["chat", "render", "--model", "dir"],
        "score": ["score", "--model", "dir"],
        "checkpoint convert": ["checkpoint", "convert", "m.bin", "--to", "hf", "--out", "dir"],
    ]

    static let threads = Kind.integer(1 ... 256)
    static let probability = Kind.number(0 ... 1, openBelow: true, float: true)
    static let temperature = Kind.number(0 ... 100, float: true)

    /// The options and the ranges the commands document.
    static let cases: [Case] = {
        var cases: [Case] = []
        func add(_ command: String, _ options: [(String, Kind)]) {
            cases += options.map { Case(name: command, command: bases[command]!, option: $0.0, kind: $0.1) }
        }
        add("generate", [("--steps", .integer(1 ... 1_000_000)), ("--temperature", temperature), ("--top-p", probability),
                         ("--top-k", .integer(0 ... 1_000_000)), ("--seed", .seed), ("--batch", .integer(1 ... 65_536)), ("--threads", threads)])
        add("eval", [("--best-of", .integer(1 ... 1_024)), ("--prompts", .integer(1 ... 10_000_000)), ("--seed", .seed), ("--temperature", temperature), ("--top-p", probability),
                     ("--max-new-tokens", .integer(1 ... 1_000_000)), ("--threads", threads)])
        for command in ["train sft", "train rm", "train pretrain"] {
            add(command, [("--batch-size", .integer(1 ... 65_536)), ("--epochs", .number(0 ... 1_000_000, openBelow: true)),
                          ("--steps", .integer(1 ... 1_000_000_000)), ("--lr", .number(0 ... 10, openBelow: true, float: true)),
                          ("--warmup", .number(0 ... 1, openAbove: true)), ("--seed", .seed), ("--threads", threads),
                          ("--checkpoint-every", .integer(1 ... 1_000_000_000))])
        }
        add("checkpoint init", ["--dim", "--hidden-dim", "--layers", "--heads", "--kv-heads", "--vocab", "--seq-len"].map { ($0, .integer(1 ... 1 << 24)) }
            + [("--seed", .seed)])
        add("tokenizer train", [("--vocab-size", .integer(259 ... 1 << 22)), ("--max-piece-length", .integer(1 ... 1_024)),
                                ("--character-coverage", .number(0 ... 1, openBelow: true))])
        add("task generate", [("--seed", .seed), ("--corpus-chat-share", .number(0 ... 1)), ("--corpus-documents", .integer(0 ... 100_000_000)),
                              ("--sft-examples", .integer(0 ... 100_000_000)), ("--preference-pairs", .integer(0 ... 100_000_000))])
        add("worker", [("--threads", threads), ("--capacity", .integer(1 ... 65_536)), ("--decode-slots", .integer(1 ... 65_536)), ("--seed", .seed), ("--restore-step", .integer(0 ... 1_000_000)),
                       ("--drain-timeout", .number(0 ... 86_400)), ("--orphan-timeout", .number(0 ... 604_800)),
                       ("--reward-timeout", .number(0 ... 86_400, openBelow: true)), ("--lora-alpha", .number(0 ... 1_000_000, openBelow: true)),
                       ("--lora-dropout", .number(0 ... 1, openAbove: true))])
        // A learner's option: parsed with --role learner (another role refuses any rank above 0).
        cases.append(Case(name: "worker", command: ["worker", "--role", "learner", "--coordinator", "tcp://127.0.0.1:1"], option: "--lora-rank",
                          kind: .integer(0 ... 4_096)))
        add("coordinator", [("--heartbeat-ms", .integer(10 ... 60_000))])
        add("status", [("--timeout", .number(0 ... 86_400, openBelow: true)), ("--interval", .number(0 ... 86_400, openBelow: true))])
        add("launch", [("--progress-every", .number(0 ... 86_400))])
        add("bench generate", [("--repeats", .integer(1 ... 1_000)), ("--batch", .integer(1 ... 65_536)), ("--batch-tokens", .integer(2 ... 1_000_000)),
                               ("--steps", .integer(2 ... 1_000_000)), ("--threads", .threadList)])
        add("bench rollout", [("--prompts", .integer(1 ... 1_000_000)), ("--samples", .integer(1 ... 1_024)), ("--max-new-tokens", .integer(1 ... 1_000_000)),
                              ("--eos-probability", .number(0 ... 1, openBelow: true)), ("--slots", .integer(1 ... 4_096)),
                              ("--repeats", .integer(1 ... 1_000)), ("--threads", .threadList)])
        add("bench train", [("--lora-rank", .integer(0 ... 4_096)), ("--repeats", .integer(1 ... 1_000)), ("--batch", .integer(1 ... 65_536)), ("--rm-batch", .integer(1 ... 65_536)),
                            ("--length", .integer(2 ... 1 << 20)), ("--threads", .threadList)])
        add("bench tokenize", [("--kilobytes", .integer(1 ... 1 << 20))])
        add("score", [("--threads", threads)])
        add("bench load", [("--rounds", .integer(1 ... 100))])
        add("bench transport", [("--count", .integer(1 ... 10_000_000)), ("--consumers", .integer(1 ... 256)), ("--workers", .integer(1 ... 4_096)),
                                ("--tasks", .integer(1 ... 10_000_000))])
        add("bench fanout", [("--prompts", .integer(1 ... 1_000_000)), ("--samples", .integer(1 ... 1_024)), ("--max-new-tokens", .integer(1 ... 1_000_000)),
                             ("--temperature", temperature), ("--generators", .integer(1 ... 256))])
        return cases
    }()

    /// Whether `value` should be taken for an option of `kind`: the option type's own reading of the text
    /// (as ArgumentParser reads it), in range.
    static func accepts(_ kind: Kind, _ value: String) -> Bool {
        switch kind {
        case let .integer(range): return Int(value).map(range.contains) ?? false
        case .threadList:
            return value.split(separator: ",", omittingEmptySubsequences: false).allSatisfy { Int($0).map((1 ... 256).contains) ?? false }
        case .seed: return UInt64(value) != nil
        case let .number(range, openBelow, openAbove, float):
            guard let x = float ? Float(value).map(Double.init) : Double(value), x.isFinite, range.contains(x) else { return false }
            return !(openBelow && x == range.lowerBound) && !(openAbove && x == range.upperBound)
        }
    }

    /// Texts of every kind: integers across their whole range and at the bounds, numbers with fractions,
    /// exponents and specials, and words.
    static let values = {
        let integers = Gen<Int64>.int64().map { "\($0)" }.eraseToAnySequence()
        let small = Gen<Int>.int(in: -300 ... 70_000).map { "\($0)" }.eraseToAnySequence()
        let bounds = Gen<String?>.element(of: ["0", "1", "2", "-1", "9", "10", "255", "256", "257", "258", "259", "1024", "1025", "65536", "65537",
                                              "86400", "86401", "604800", "604801", "1000000", "1000001", "16777216", "16777217",
                                              "4194304", "4194305", "100000000", "100000001", "1000000000", "1000000001", "60000", "60001",
                                              "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616",
                                              "-9223372036854775808", "99999999999999999999999"]).map { $0! }.eraseToAnySequence()
        let numbers = Gen<Double>.double(in: -2_000 ... 2_000).map { "\($0)" }.eraseToAnySequence()
        let specials = Gen<String?>.element(of: ["0.0", "-0", "-0.0", "0.5", "1.0", "1.5", "0.9995", "1e-300", "1e-50", "1e-45", "1e300", "1e39",
                                                "3.4e38", "nan", "NaN", "-nan", "inf", "-inf", "infinity", "+5", "5.", ".5", "-.5", "0x10",
                                                "1_000", "1,5", " 5", "5 ", "", "abc", "-abc", "٣", "1e", "e5", "--", "true"]).map { $0! }.eraseToAnySequence()
        return Gen<String>.oneOf(integers, small, bounds, numbers, specials)
    }()

    @Test func everyNumericOptionTakesExactlyItsRange() async {
        await propertyCheck(count: 2_000, input: Gen<Int>.int(in: 0 ... OptionPropertyTests.cases.count - 1), OptionPropertyTests.values) { c, value in
            let testCase = OptionPropertyTests.cases[c]
            let arguments = RLHF.normalizedArguments(testCase.command + [testCase.option, value])
            let expected = OptionPropertyTests.accepts(testCase.kind, value)
            do {
                _ = try RLHF.parseAsRoot(arguments)
                #expect(expected, "\(testCase.name) \(testCase.option) \"\(value)\" was taken")
            } catch {
                let message = RLHF.message(for: error)
                #expect(!expected, "\(testCase.name) \(testCase.option) \"\(value)\" was refused: \(message)")
                #expect(message.contains(testCase.option), "\(testCase.option) \"\(value)\": the message does not name the option: \(message)")
            }
        }
    }

    /// Every option of every command that refuses a word is in the table above (a numeric option added
    /// later without a range fails here), or takes a fixed set of words.
    @Test func theTableCoversEveryNumericOption() throws {
        func leaves(_ command: ParsableCommand.Type, _ path: [String]) -> [[String]] {
            let subcommands = command.configuration.subcommands
            if subcommands.isEmpty { return [path] }
            return subcommands.flatMap { leaves($0, path + [$0._commandName]) }
        }
        // Lists of numbers, checked entry by entry (generateRejectsBadInput, the bench's --threads above).
        // JSON objects (--chat-template-kwargs), refused naming the option where not one (HuggingFaceCLITests).
        let json = ["generate", "chat render", "score", "train sft", "train rm", "train pretrain"].map { "\($0) --chat-template-kwargs" }
        let covered = Set(OptionPropertyTests.cases.map { "\($0.name) \($0.option)" }).union(["generate --prompt-ids"] + json)
        for path in leaves(RLHF.self, []) where !["selftest", "tokenize", "keys generate", "checkpoint info"].contains(path.joined(separator: " ")) {
            let name = path.joined(separator: " ")
            guard let base = OptionPropertyTests.bases[name] else {
                Issue.record("no base arguments for rlhf \(name)")
                continue
            }
            let options = OptionPropertyTests.options(of: path)
            for option in options {
                do {
                    _ = try RLHF.parseAsRoot(base + [option, "not-a-number"])
                } catch {
                    let message = RLHF.message(for: error)
                    let key = "\(name) \(option)"
                    if message.contains("not-a-number") && !message.contains("one of") && !message.contains("Please provide") && !covered.contains(key) {
                        Issue.record("rlhf \(name) \(option) refuses a word but has no range in the table: \(message)")
                    }
                }
            }
        }
    }

    /// The long options of `rlhf PATH`, from its help text.
    static func options(of path: [String]) -> [String] {
        var command: ParsableCommand.Type = RLHF.self
        for name in path {
            guard let next = command.configuration.subcommands.first(where: { $0._commandName == name }) else { return [] }
            command = next
        }
        let help = RLHF.helpMessage(for: command, columns: 10_000)
        let pattern = try! NSRegularExpression(pattern: "^  (--[a-z0-9-]+) <", options: .anchorsMatchLines)
        return pattern.matches(in: help, range: NSRange(help.startIndex..., in: help)).map { String(help[Range($0.range(at: 1), in: help)!]) }
    }
}
