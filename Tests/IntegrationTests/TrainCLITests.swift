import Foundation
import Testing
import TestKit

/// `rlhf task generate`, `rlhf train` and `rlhf eval` as a user runs them, on a tiny model.
@Suite(.serialized) struct TrainCLITests {
    static let tokenizer = Fixtures.kjvBin

    /// A fresh directory with a small task data set.
    static func taskDirectory() throws -> String {
        let dir = TestKit.scratch("train-cli")
        let result = try CLITests.rlhf(["task", "generate", "--out", dir + "/data", "--seed", "3", "--corpus-documents", "300",
                                        "--sft-examples", "100", "--preference-pairs", "120"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("300 corpus documents, 100 SFT examples, 120 preference pairs"), "\(result.stdout)")
        return dir
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test func pretrainSFTRewardModelAndEvalEndToEnd() throws {
        let dir = try TrainCLITests.taskDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pretrain = try CLITests.rlhf(["train", "pretrain", "--corpus", dir + "/data/corpus.txt", "--tokenizer", TrainCLITests.tokenizer,
                                          "--config", "dim=32,n_layers=1,n_heads=2,seq_len=256", "--out", dir + "/base.bin",
                                          "--steps", "3", "--batch-size", "4"])
        #expect(pretrain.status == 0, "\(pretrain.stdout)\(pretrain.stderr)")
        #expect(pretrain.stdout.contains("step 3/3"))
        #expect(TrainCLITests.lines(dir + "/base.bin.metrics.jsonl").count == 3)
        let info = try CLITests.rlhf(["checkpoint", "info", dir + "/base.bin"])
        #expect(info.status == 0 && info.stdout.contains("512"), "\(info.stdout)\(info.stderr)")

        let sft = try CLITests.rlhf(["train", "sft", "--data", dir + "/data/sft.jsonl", "--init", dir + "/base.bin", "--tokenizer",
                                     TrainCLITests.tokenizer, "--out", dir + "/sft.bin", "--steps", "2", "--batch-size", "4"])
        #expect(sft.status == 0, "\(sft.stdout)\(sft.stderr)")

        let rm = try CLITests.rlhf(["train", "rm", "--data", dir + "/data/prefs.jsonl", "--init", dir + "/sft.bin", "--tokenizer",
                                    TrainCLITests.tokenizer, "--out", dir + "/rm.bin", "--steps", "2", "--batch-size", "4", "--margin", "large"])
        #expect(rm.status == 0, "\(rm.stdout)\(rm.stderr)")
        #expect(rm.stdout.contains("held-out accuracy per preference level"))
        let head = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/rm.bin.head.json"))) as? [String: Any]
        #expect((head?["weight"] as? [Any])?.count == 32)

        let eval = try CLITests.rlhf(["eval", "--checkpoint", dir + "/sft.bin", "--tokenizer", TrainCLITests.tokenizer, "--against", dir + "/base.bin",
                                      "--best-of", "2", "--reward-model", dir + "/rm.bin", "--prompts", "6", "--max-new-tokens", "8", "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any]
        #expect(report?["prompts"] as? Int == 6)
        let win = report?["win_rate"] as? [String: Any]
        #expect(((win?["wins"] as? Int) ?? 0) + ((win?["ties"] as? Int) ?? 0) + ((win?["losses"] as? Int) ?? 0) == 6)
    }

    @Test func badDataStopsWithItsLineOrIsSkippedWhenAsked() throws {
        let dir = try TrainCLITests.taskDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try CLITests.rlhf(["checkpoint", "init", "--dim", "32", "--hidden-dim", "64", "--layers", "1", "--heads", "2", "--kv-heads", "2",
                               "--vocab", "512", "--seq-len", "256", "--out", dir + "/base.bin"])
        let data = dir + "/data/sft.jsonl"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: data))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("not json\n{\"prompt\": \"Hi\", \"response\": \"\"}\n".utf8))
        try handle.close()
        let arguments = ["train", "sft", "--data", data, "--init", dir + "/base.bin", "--tokenizer", TrainCLITests.tokenizer,
                         "--out", dir + "/sft.bin", "--steps", "1", "--batch-size", "2"]
        let refused = try CLITests.rlhf(arguments)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("\(data):101: not a JSON object"), "\(refused.stderr)")
        let skipped = try CLITests.rlhf(arguments + ["--on-bad-data", "skip"])
        #expect(skipped.status == 0, "\(skipped.stderr)")
        #expect(skipped.stderr.contains("skipped \(data):101: not a JSON object"))
        #expect(skipped.stderr.contains("skipped \(data):102: empty response"))
        #expect(skipped.stdout.contains("100 examples, 2 bad lines skipped"), "\(skipped.stdout)")
        #expect(skipped.stdout.hasSuffix("skipped 2 bad lines of \(data) (listed above)\n"), "\(skipped.stdout)")
    }

    /// A preference file as TRL writes it (implicit-prompt conversations, no LLaMA2 levels, gzip) and one
    /// with its own key names train a reward model; the held-out pairs are reported as unlabelled.
    @Test func aRewardModelTrainsOnTRLPreferenceFiles() throws {
        let dir = try TrainCLITests.taskDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try CLITests.rlhf(["checkpoint", "init", "--dim", "32", "--hidden-dim", "64", "--layers", "1", "--heads", "2", "--kv-heads", "2",
                               "--vocab", "512", "--seq-len", "256", "--out", dir + "/base.bin"])
        var implicit = "", renamed = ""
        for line in TrainCLITests.lines(dir + "/data/prefs.jsonl") {
            let record = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let user: [String: Any] = ["role": "user", "content": record["prompt"] as? String ?? ""]
            func conversation(_ key: String) -> [[String: Any]] { [user, ["role": "assistant", "content": record[key] as? String ?? ""]] }
            func encoded(_ object: [String: Any]) throws -> String { String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self) + "\n" }
            implicit += try encoded(["chosen": conversation("chosen"), "rejected": conversation("rejected")])
            renamed += try encoded(["question": record["prompt"] ?? "", "response_chosen": record["chosen"] ?? "",
                                 "response_rejected": record["rejected"] ?? ""])
        }
        try implicit.write(toFile: dir + "/trl.jsonl", atomically: true, encoding: .utf8)
        try renamed.write(toFile: dir + "/renamed.jsonl", atomically: true, encoding: .utf8)
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = [dir + "/trl.jsonl"]
        try gzip.run()
        gzip.waitUntilExit()
        let common = ["--init", dir + "/base.bin", "--tokenizer", TrainCLITests.tokenizer, "--steps", "2", "--batch-size", "4"]
        let trl = try CLITests.rlhf(["train", "rm", "--data", dir + "/trl.jsonl.gz", "--out", dir + "/rm.bin"] + common)
        #expect(trl.status == 0, "\(trl.stdout)\(trl.stderr)")
        #expect(trl.stdout.contains("(all): 120 examples"), "\(trl.stdout)")
        #expect(trl.stdout.contains("  unlabelled ") && !trl.stdout.contains("significantly_better"), "\(trl.stdout)")
        let eval = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/rm.bin.eval.json"))) as? [String: Any]
        #expect(((eval?["unlabelled"] as? [String: Any])?["total"] as? Int ?? 0) > 0)
        let keyed = try CLITests.rlhf(["train", "rm", "--data", dir + "/renamed.jsonl", "--out", dir + "/rm2.bin", "--prompt-key", "question",
                                       "--chosen-key", "response_chosen", "--rejected-key", "response_rejected"] + common)
        #expect(keyed.status == 0 && keyed.stdout.contains("(all): 120 examples"), "\(keyed.stdout)\(keyed.stderr)")
        let unkeyed = try CLITests.rlhf(["train", "rm", "--data", dir + "/renamed.jsonl", "--out", dir + "/rm3.bin"] + common)
        #expect(unkeyed.status != 0 && unkeyed.stderr.contains("renamed.jsonl:1: "), "\(unkeyed.stderr)")
    }

    @Test func anInterruptedRunResumesWhereItStopped() throws {
        let dir = try TrainCLITests.taskDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let arguments = ["train", "pretrain", "--corpus", dir + "/data/corpus.txt", "--tokenizer", TrainCLITests.tokenizer,
                         "--config", "dim=32,n_layers=1,n_heads=2,seq_len=256", "--out", dir + "/base.bin", "--steps", "24", "--batch-size", "8"]
        let process = Process()
        process.executableURL = CLITests.executable
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        let err = dir + "/err"
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, TrainCLITests.lines(dir + "/base.bin.metrics.jsonl").count < 2, process.isRunning {
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        #expect(process.terminationStatus == 130)
        let message = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        #expect(message.contains("interrupted at step") && message.contains("--resume"), "\(message)")
        let done = TrainCLITests.lines(dir + "/base.bin.metrics.jsonl").count
        #expect(done >= 2 && done < 24)
        #expect(!FileManager.default.fileExists(atPath: dir + "/base.bin"))

        // A resume with other settings is refused, naming each difference (issue 23, point 6) ...
        let changed = try CLITests.rlhf(arguments + ["--resume", "--lr", "0.5", "--steps=10"])
        #expect(changed.status != 0)
        #expect(changed.stderr.contains("--lr: not given then, 0.5 now") && changed.stderr.contains("--steps: 24.0 then, 10.0 now"),
                "\(changed.stderr)")
        #expect(changed.stderr.contains("--resume-with-changes"))
        // ... while options that do not shape the training may change.
        let resumed = try CLITests.rlhf(arguments + ["--resume", "--threads", "2", "--tensorboard", dir + "/board"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("resuming at step \(done)"), "\(resumed.stdout)")
        // The resumed steps as TensorBoard scalars too: one event file, an event of five scalars per step after its header.
        let boards = try FileManager.default.contentsOfDirectory(atPath: dir + "/board")
        #expect(boards.count == 1 && boards[0].hasPrefix("events.out.tfevents."), "\(boards)")
        let boardBytes = try boards.first.map { try Data(contentsOf: URL(fileURLWithPath: dir + "/board/" + $0)).count } ?? 0
        #expect(boardBytes > 100 * (24 - done), "\(boardBytes) bytes for \(24 - done) steps")
        // Every step logged once: the first run's and the resumed run's lines together.
        let steps = TrainCLITests.lines(dir + "/base.bin.metrics.jsonl").compactMap { line -> Int? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["step"] as? Int
        }
        #expect(steps == Array(1...24))
        #expect(FileManager.default.fileExists(atPath: dir + "/base.bin"))
        let missing = try CLITests.rlhf(["train", "pretrain", "--corpus", dir + "/data/corpus.txt", "--tokenizer", TrainCLITests.tokenizer,
                                         "--config", "dim=32,n_layers=1,n_heads=2,seq_len=256", "--out", dir + "/other.bin", "--resume"])
        #expect(missing.status != 0 && missing.stderr.contains("no training state at \(dir)/other.bin.state"), "\(missing.stderr)")
    }
}

/// Option values that were taken silently wrong or crashed (issue 23, point 7).
@Suite struct OptionValidationTests {
    @Test(arguments: ["inf", "1e300", "5000000", "nan", "-1", "0"])
    func statusRefusesATimeoutThatIsNotAFewSeconds(value: String) throws {
        // With a space too: `--timeout -1` reaches the check (before, the parser took -1 for an option).
        let result = try CLITests.rlhf(["status", "--coordinator", "tcp://127.0.0.1:1", "--timeout", value])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--timeout must be a number in (0.0, 86400.0], got"), "\(result.stderr)")
        #expect(!result.stderr.contains("Fatal error"))
    }

    @Test func anUnwritableMetricsPathStopsTheRunWithItsName() throws {
        let dir = TestKit.scratch("metrics")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try String(repeating: "In the beginning was the word.\n", count: 40).write(toFile: dir + "/corpus.txt", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["train", "pretrain", "--corpus", dir + "/corpus.txt", "--tokenizer", TrainCLITests.tokenizer,
                                        "--config", "dim=32,n_layers=1,n_heads=2,seq_len=64", "--out", dir + "/base.bin",
                                        "--steps", "1", "--batch-size", "2", "--metrics", dir + "/no-such-folder/m.jsonl"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--metrics: cannot write \(dir)/no-such-folder/m.jsonl"), "\(result.stdout)\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/base.bin"))
        // An output that cannot be written is found before any step runs too (it was found at the first
        // state write, after the work).
        let out = try CLITests.rlhf(["train", "pretrain", "--corpus", dir + "/corpus.txt", "--tokenizer", TrainCLITests.tokenizer,
                                     "--config", "dim=32,n_layers=1,n_heads=2,seq_len=64", "--out", dir + "/no-such-folder/base.bin",
                                     "--steps", "1", "--batch-size", "2", "--metrics", dir + "/m.jsonl"])
        #expect(out.status != 0)
        #expect(out.stderr.contains("--out: cannot write \(dir)/no-such-folder/base.bin: no directory"), "\(out.stdout)\(out.stderr)")
        #expect(!out.stdout.contains("step 1"), "\(out.stdout)")
        // So is a TensorBoard directory that cannot be made (a file is in the way).
        let board = try CLITests.rlhf(["train", "pretrain", "--corpus", dir + "/corpus.txt", "--tokenizer", TrainCLITests.tokenizer,
                                       "--config", "dim=32,n_layers=1,n_heads=2,seq_len=64", "--out", dir + "/base.bin",
                                       "--steps", "1", "--batch-size", "2", "--tensorboard", dir + "/corpus.txt/board"])
        #expect(board.status != 0 && board.stderr.contains("--tensorboard: cannot write \(dir)/corpus.txt/board"), "\(board.stdout)\(board.stderr)")
        #expect(!board.stdout.contains("step 1"), "\(board.stdout)")
    }
}
