import ArgumentParser
import Foundation
import LlamaCore
import LlamaTraining
import Recipe
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension BadDataPolicy: ExpressibleByArgument {}
extension MarginTable: ExpressibleByArgument {}
extension PreferenceSubset: ExpressibleByArgument {}

/// `rlhf train`: the single-process trainers.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model: pretraining on a corpus, SFT on chat data, a reward model on preference pairs.",
        subcommands: [Pretrain.self, SFT.self, RewardModel.self]
    )

    /// Options every trainer takes.
    struct Common: ParsableArguments {
        @Option(help: "Output checkpoint: a llama2.c file, or a Hugging Face model directory when OUT ends in / (or the model's eps/theta need one). Beside it: OUT.state (the training state), OUT.metrics.jsonl.")
        var out: String
        @Option(help: "Tokenizer (tokenizer.bin, tokenizer.model, tokenizer.json); default: a model directory's own, else tokenizer.bin beside the input checkpoint.")
        var tokenizer: String?
        @Option(name: .customLong("prompt-key"), help: "The records' prompt key (TRL/OpenRLHF datasets: prompt, question, ...).")
        var promptKey = "prompt"
        @Option(name: .customLong("chosen-key"), help: "The preference records' chosen key.")
        var chosenKey = "chosen"
        @Option(name: .customLong("rejected-key"), help: "The preference records' rejected key.")
        var rejectedKey = "rejected"
        @Option(name: .customLong("messages-key"), help: "The SFT records' conversation key.")
        var messagesKey = "messages"
        @Option(name: .customLong("completion-key"), help: "The SFT records' answer key beside the prompt (OpenRLHF's output_key; the default also takes response).")
        var completionKey = "completion"
        @Option(name: .customLong("chat-template"), help: "Chat format of the conversations: llama2, chatml or llama3 (default: the model's own template, else llama2).")
        var chatTemplate: ChatFormat?
        @Option(name: .customLong("chat-template-kwargs"), help: "A JSON object of what the model's own chat template reads beside the conversation, as transformers' apply_chat_template takes them, e.g. '{\"enable_thinking\": false}' for Qwen3 and SmolLM3.")
        var chatTemplateKwargs: String?
        @Option(help: "Examples (pairs for rm) per optimizer step.")
        var batchSize: Int?
        @Option(help: "Passes over the data.")
        var epochs: Double?
        @Option(help: "Optimizer steps (overrides --epochs).")
        var steps: Int?
        @Option(name: .customLong("lr"), help: "Peak learning rate (linear warm-up, then cosine decay to 10%).")
        var learningRate: Float?
        @Option(help: "Share of the steps spent warming up.")
        var warmup: Double = 0.03
        @Option(help: "Seed of the data order and of new weights.")
        var seed: UInt64 = 1
        @Option(help: "Compute threads.")
        var threads: Int = 1
        @Option(help: "Bad lines of data: stop (refuse the file, naming the line) or skip (report each and go on).")
        var onBadData: BadDataPolicy = .stop
        @Option(help: "Metrics as JSON lines, one per step (default OUT.metrics.jsonl).")
        var metrics: String?
        @Option(help: "Also write each step's metrics as TensorBoard scalars (train/loss, train/learning_rate, train/grad_norm, ...) in this directory.")
        var tensorboard: String?
        @Option(help: "Write the training state every N steps (and every 60 s).")
        var checkpointEvery: Int = 200
        @Flag(help: "Resume from OUT.state, written by an interrupted or killed run of the same command.")
        var resume = false
        @Flag(help: "With --resume: go on although options that define the run (data, schedule, seed, ...) differ from the run that wrote the state.")
        var resumeWithChanges = false

        func validate() throws {
            try OptionCheck.integer(batchSize, "--batch-size", 1 ... 65_536)
            try OptionCheck.number(epochs, "--epochs", 0 ... 1_000_000, openBelow: true)
            try OptionCheck.integer(steps, "--steps", 1 ... 1_000_000_000)
            try OptionCheck.number(learningRate, "--lr", 0 ... 10, openBelow: true)
            try OptionCheck.number(warmup, "--warmup", 0 ... 1, openAbove: true)
            try OptionCheck.threads(threads)
            _ = try OptionCheck.chatTemplateArguments(chatTemplateKwargs)
            try OptionCheck.integer(checkpointEvery, "--checkpoint-every", 1 ... 1_000_000_000)
        }

        func settings(batch: Int, epochs: Double, learningRate: Float) throws -> TrainerSettings {
            var s = TrainerSettings.default
            s.batchSize = batchSize ?? batch
            s.epochs = self.epochs ?? epochs
            s.steps = steps
            s.learningRate = self.learningRate ?? learningRate
            s.warmupFraction = warmup
            s.seed = seed
            s.checkpointEverySteps = checkpointEvery
            s.run = TrainCommand.runOptions(CommandLine.arguments)
            try s.validate()
            guard threads >= 1 else { throw LlamaError.invalidInput("--threads must be at least 1") }
            return s
        }

        /// The records' key names.
        var dataKeys: DataKeys { DataKeys(prompt: promptKey, chosen: chosenKey, rejected: rejectedKey, messages: messagesKey,
                                        completion: completionKey) }

        /// `--out` without a trailing `/`: the stem of the files written beside it.
        var outStem: String { out.hasSuffix("/") ? String(out.dropLast()) : out }
        var statePath: String { outStem + ".state" }

        /// The tokenizer's path: `--tokenizer`, or the checkpoint `near`'s own (a model directory's,
        /// else tokenizer.bin beside the file).
        func tokenizerPath(near: String?) throws -> String {
            if let tokenizer { return tokenizer }
            if let near {
                let beside = Tokenizer.defaultPath(forCheckpoint: near)
                if FileManager.default.fileExists(atPath: beside) { return beside }
            }
            throw ValidationError("give --tokenizer (no tokenizer.bin beside \(near ?? "the output"))")
        }

        /// The tokenizer (`tokenizerPath(near:)`) in the chat format of `--chat-template`, else its
        /// own (an unrecognised template is refused here, naming the supported formats).
        func loadTokenizer(near: String?, rendersChats: Bool = true) throws -> Tokenizer {
            if !rendersChats && chatTemplateKwargs != nil {
                // Said, rather than ignored: the arguments would change nothing.
                throw ValidationError("--chat-template-kwargs: train pretrain renders no conversation (it trains on plain text); give it to train sft or rm")
            }
            var tokenizer = try Tokenizer(path: tokenizerPath(near: near))
            if let chatTemplate {
                try tokenizer.useChatFormat(chatTemplate)
            } else if rendersChats {
                try tokenizer.requireChatFormat()
            }
            if rendersChats { try tokenizer.useChatTemplateArguments(try OptionCheck.chatTemplateArguments(chatTemplateKwargs)) }
            return tokenizer
        }

        /// Writes the trained model to `--out`: a llama2.c file, or a Hugging Face model directory
        /// (with the tokenizer) when `--out` ends in `/` or is a directory, or when llama2.c's header
        /// cannot hold the model's RMSNorm epsilon, RoPE theta or RoPE scaling (a Hugging Face model's).
        func writeModel(_ weights: ModelWeights, near: String?) throws -> String {
            var isDirectory: ObjCBool = false
            let asDirectory = out.hasSuffix("/") || (FileManager.default.fileExists(atPath: out, isDirectory: &isDirectory) && isDirectory.boolValue)
            let c = weights.config
            if asDirectory || !Checkpoint.legacyHolds(c) {
                try HuggingFaceExport.write(weights: weights, tokenizerPath: try tokenizerPath(near: near), dtype: .float32, to: outStem)
                return "\(outStem) (Hugging Face model directory)"
            }
            try Checkpoint.writeLegacy(weights, to: out)
            return out
        }

        /// The state to resume from, when `--resume`.
        func resumeState() throws -> TrainingState? {
            guard resume else { return nil }
            guard FileManager.default.fileExists(atPath: statePath) else {
                throw LlamaError.invalidInput("--resume: no training state at \(statePath)")
            }
            let state = try TrainingState.read(path: statePath)
            let changes = TrainCommand.differences(before: state.run, now: TrainCommand.runOptions(CommandLine.arguments))
            if !changes.isEmpty && !resumeWithChanges {
                throw ValidationError("--resume: \(statePath) was written by a run with other settings: \(changes.joined(separator: "; ")). "
                                      + "Run the same command as before, or add --resume-with-changes to go on with these settings.")
            }
            return state
        }

        /// The tokenizer, the state to resume from (with `--resume`), and the weights to train: the
        /// state's, else the checkpoint `initial`'s; the tokenizer checked against them.
        func startingPoint(initial: String) throws -> (tokenizer: Tokenizer, resume: TrainingState?, weights: ModelWeights) {
            let tokenizer = try loadTokenizer(near: initial)
            let resume = try resumeState()
            let weights = try resume?.weights ?? Checkpoint.read(path: initial).weights
            try tokenizer.check(against: weights.config)
            return (tokenizer, resume, weights)
        }

        /// The progress monitor, appending to the metrics file when resuming. The output and the state
        /// file are checked first: a place that cannot be written is found before any step runs, not at
        /// the first state write after the work.
        func monitor(resuming: Bool) throws -> Monitor {
            for path in [out, statePath] { try OutputCheck.writable(path, option: "--out") }
            return try Monitor(metricsPath: metrics ?? outStem + ".metrics.jsonl", append: resuming, tensorBoardDirectory: tensorboard)
        }

        /// Reports the data's bad lines (all of them with `skip`; `stop` has thrown at the first).
        func report(_ issues: [DataIssue], kept: Int, what: String) {
            for issue in issues.prefix(20) { printError("skipped \(issue)") }
            if issues.count > 20 { printError("... and \(issues.count - 20) more bad lines") }
            print("\(what): \(kept) examples\(issues.isEmpty ? "" : ", \(issues.count) bad lines skipped")")
        }

        /// The last line of a run that skipped bad lines (--on-bad-data skip): how many, and where.
        func summarise(_ issues: [DataIssue], what: String) {
            if !issues.isEmpty { print("skipped \(issues.count) bad line\(issues.count == 1 ? "" : "s") of \(what) (listed above)") }
        }
    }

    /// Prints progress (one refreshing line on a terminal, plain lines otherwise) and writes the
    /// metrics file; Ctrl-C or SIGTERM asks the run to stop at the next step boundary.
    final class Monitor: @unchecked Sendable {
        let metrics: FileHandle?
        /// `--tensorboard`'s log (nil: not asked for).
        var tensorBoard: TensorBoardLog?
        let terminal = isatty(STDOUT_FILENO) == 1
        var lastPrint = Date.distantPast
        /// Set by SIGINT or SIGTERM.
        final class StopFlag: Sendable { let raised = Atomic<Bool>(false) }
        let stop = StopFlag()
        var sources: [DispatchSourceSignal] = []

        init(metricsPath: String, append: Bool, tensorBoardDirectory: String? = nil) throws {
            if !append || !FileManager.default.fileExists(atPath: metricsPath) {
                _ = FileManager.default.createFile(atPath: metricsPath, contents: nil)
            }
            // Found before any step runs: a metrics file that cannot be written is an error, not silence.
            guard let handle = FileHandle(forWritingAtPath: metricsPath) else {
                throw ValidationError("--metrics: cannot write \(metricsPath): \(String(cString: strerror(errno)))")
            }
            metrics = handle
            try handle.seekToEnd()
            do {
                tensorBoard = try tensorBoardDirectory.map { try TensorBoardLog(directory: $0) }
            } catch {
                throw ValidationError("--tensorboard: cannot write \(tensorBoardDirectory!): \(error)")
            }
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: DispatchQueue(label: "rlhf.train.signals"))
                source.setEventHandler { [stop] in stop.raised.store(true, ordering: .relaxed) }
                source.resume()
                sources.append(source)
            }
        }

        deinit { sources.forEach { $0.cancel() } }

        var shouldStop: Bool { stop.raised.load(ordering: .relaxed) }

        func step(_ p: TrainingProgress) {
            if let data = try? JSONEncoder().encode(p) { metrics?.write(data + Data([0x0A])) }
            try? tensorBoard?.write(["stage": "train", "step": p.step, "loss": p.loss, "learning_rate": Double(p.learningRate), "grad_norm": p.gradNorm,
                                     "tokens_per_second": p.tokensPerSecond, "epoch": p.epoch], wallTime: Date().timeIntervalSince1970)
            let now = Date()
            let last = p.step == p.totalSteps
            guard last || now.timeIntervalSince(lastPrint) >= (terminal ? 0.2 : 5) else { return }
            lastPrint = now
            let line = String(format: "step %d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | epoch %.2f | ETA %@",
                              p.step, p.totalSteps, p.loss, p.learningRate, p.gradNorm, p.tokensPerSecond, p.epoch,
                              Monitor.duration(p.etaSeconds))
            if terminal {
                print("\r\u{1B}[K" + line, terminator: last ? "\n" : "")
            } else {
                print(line)
            }
            fflush(nil)
        }

        static func duration(_ seconds: Double) -> String {
            let s = Int(seconds.rounded())
            return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : String(format: "%dm%02ds", s / 60, s % 60)
        }

        /// Ends the run: on an interruption, says how to resume and exits 130.
        func finish(_ outcome: TrainingOutcome, command: String) throws {
            if case let .interrupted(step) = outcome {
                if terminal { print("") }
                printError("interrupted at step \(step); the training state is saved. Resume with: \(command) --resume")
                throw ExitCode(130)
            }
        }
    }

    /// Options that may change between a run and its resume: they do not shape the training.
    static let operationalOptions: Set<String> = ["--threads", "--metrics", "--tensorboard", "--checkpoint-every", "--resume", "--resume-with-changes"]

    /// The options that define a run, from its command line (`rlhf train SUBCOMMAND --key value ...` or
    /// `--key=value`; a flag reads "true"): the subcommand and every option given, less the operational
    /// ones. Numbers are compared as numbers (`1e-4` and `0.0001` are the same rate).
    static func runOptions(_ arguments: [String]) -> [String: String] {
        var options: [String: String] = [:]
        var i = 1
        if let train = arguments.firstIndex(of: "train"), train + 1 < arguments.count {
            options["command"] = arguments[train + 1]
            i = train + 2
        }
        while i < arguments.count {
            let word = arguments[i]
            i += 1
            guard word.hasPrefix("--") else { continue }
            var name = word, value = "true"
            if let equals = word.firstIndex(of: "=") {
                name = String(word[..<equals])
                value = String(word[word.index(after: equals)...])
            } else if i < arguments.count, !arguments[i].hasPrefix("--") {
                value = arguments[i]
                i += 1
            }
            guard !operationalOptions.contains(name) else { continue }
            options[name] = Double(value).map { "\($0)" } ?? value
        }
        return options
    }

    /// Each option that differs between the run that wrote a state and this one, as "--lr: 0.0001 then,
    /// 0.5 now". A state that recorded nothing (written before runs were recorded) differs in nothing.
    static func differences(before: [String: String], now: [String: String]) -> [String] {
        guard !before.isEmpty else { return [] }
        return Set(before.keys).union(now.keys).sorted().compactMap { key in
            let then = before[key], current = now[key]
            guard then != current else { return nil }
            return "\(key): \(then ?? "not given") then, \(current ?? "not given") now"
        }
    }

    /// The command line to resume (this process's arguments).
    static var commandLine: String { (["rlhf"] + CommandLine.arguments.dropFirst().filter { $0 != "--resume" }).joined(separator: " ") }

    /// `rlhf train pretrain`.
    struct Pretrain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pretrain a new LLaMA2 model on a text corpus (one document a line), every token trained on."
        )

        @Option(help: "Corpus: one document a line.")
        var corpus: String
        @Option(help: "Model shape: dim=,hidden_dim=,n_layers=,n_heads=,n_kv_heads=,seq_len= (vocab_size comes from the tokenizer), or a JSON file of a LlamaConfig.")
        var config: String
        @OptionGroup var common: Common

        func run() throws {
            do {
                let settings = try common.settings(batch: 32, epochs: 1, learningRate: 1e-3)
                let tokenizer = try common.loadTokenizer(near: nil, rendersChats: false)
                let resume = try common.resumeState()
                let modelConfig = try resume?.weights.config ?? Pretrain.parseConfig(config, vocabSize: tokenizer.vocabSize)
                guard modelConfig.vocabSize == tokenizer.vocabSize else {
                    throw LlamaError.invalidInput("the model's vocab_size \(modelConfig.vocabSize) differs from the tokenizer's \(tokenizer.vocabSize)")
                }
                let (data, issues) = try TrainingData.corpus(corpus, tokenizer: tokenizer, seqLen: modelConfig.seqLen, policy: common.onBadData)
                common.report(issues, kept: data.count, what: corpus)
                let weights = resume?.weights ?? ModelWeights.random(config: modelConfig, seed: settings.seed)
                let model = TrainableTransformer(weights: weights, pool: ComputePool(threads: common.threads))
                print("model: dim \(modelConfig.dim), \(modelConfig.nLayers) layers, \(modelConfig.nHeads) heads (\(modelConfig.nKVHeads) kv), "
                      + "vocab \(modelConfig.vocabSize), seq_len \(modelConfig.seqLen): \(ParameterLayout(config: modelConfig).totalCount) parameters"
                      + (resume.map { "; resuming at step \($0.step)" } ?? ""))
                let monitor = try common.monitor(resuming: resume != nil)
                let outcome = try Trainers.languageModel(model, data: data, settings: settings, statePath: common.statePath, resume: resume,
                                                         progress: monitor.step, shouldStop: { monitor.shouldStop })
                try monitor.finish(outcome, command: TrainCommand.commandLine)
                print("wrote \(try common.writeModel(model.weights, near: nil))")
                common.summarise(issues, what: corpus)
            } catch {
                throw cliFailure(error)
            }
        }

        /// `dim=...,hidden_dim=...` or a JSON file.
        static func parseConfig(_ text: String, vocabSize: Int) throws -> LlamaConfig {
            if FileManager.default.fileExists(atPath: text) {
                let data = try Data(contentsOf: URL(fileURLWithPath: text))
                var config = try JSONDecoder().decode(LlamaConfig.self, from: data)
                config.vocabSize = vocabSize
                try config.validate()
                return config
            }
            var values: [String: Int] = [:]
            let known: Set<String> = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "seq_len"]
            for part in text.split(separator: ",") {
                let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard kv.count == 2, known.contains(kv[0]), let value = Int(kv[1]) else {
                    throw LlamaError.invalidInput("--config: '\(part)' is not KEY=INTEGER with KEY one of \(known.sorted().joined(separator: ", "))")
                }
                values[kv[0]] = value
            }
            for key in known where values[key] == nil && key != "n_kv_heads" && key != "hidden_dim" {
                throw LlamaError.invalidInput("--config: missing \(key)")
            }
            let dim = values["dim"]!
            let config = LlamaConfig(dim: dim, hiddenDim: values["hidden_dim"] ?? (8 * dim / 3 + 31) / 32 * 32, nLayers: values["n_layers"]!,
                                     nHeads: values["n_heads"]!, nKVHeads: values["n_kv_heads"] ?? values["n_heads"]!, vocabSize: vocabSize,
                                     seqLen: values["seq_len"]!)
            try config.validate()
            return config
        }
    }

    /// `rlhf train sft`.
    struct SFT: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sft",
            abstract: "Supervised fine-tuning on chat data in LLaMA2's format, the loss on the answers' tokens only.",
            discussion: "Data: JSON lines or a JSON array of records (gzip accepted): {\"messages\": [{\"role\", \"content\"}, ...]}, {\"prompt\", \"completion\"} or {\"prompt\", \"response\"} (strings or message lists), or {\"text\"} (trained on every token)."
        )

        @Option(help: "SFT data (JSON lines or a JSON array).")
        var data: String
        @Option(name: .customLong("init"), help: "Checkpoint to start from.")
        var initial: String
        @OptionGroup var common: Common

        func run() throws {
            do {
                let settings = try common.settings(batch: 16, epochs: 2, learningRate: 1e-4)
                let (tokenizer, resume, weights) = try common.startingPoint(initial: initial)
                let (examples, issues) = try TrainingData.sft(data, tokenizer: tokenizer, seqLen: weights.config.seqLen, policy: common.onBadData,
                                                              keys: common.dataKeys)
                common.report(issues, kept: examples.count, what: data)
                let model = TrainableTransformer(weights: weights, pool: ComputePool(threads: common.threads))
                let monitor = try common.monitor(resuming: resume != nil)
                let outcome = try Trainers.languageModel(model, data: examples, settings: settings, statePath: common.statePath, resume: resume,
                                                         progress: monitor.step, shouldStop: { monitor.shouldStop })
                try monitor.finish(outcome, command: TrainCommand.commandLine)
                print("wrote \(try common.writeModel(model.weights, near: initial))")
                common.summarise(issues, what: data)
            } catch {
                throw cliFailure(error)
            }
        }
    }

    /// `rlhf train rm`.
    struct RewardModel: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Train a reward model (the checkpoint's trunk plus a scalar head) with LLaMA2's ranking loss and margins.",
            discussion: """
            Data: JSON lines or a JSON array of records (gzip accepted): {"prompt", "chosen", "rejected"} with strings or message lists, or TRL's \
            {"chosen", "rejected"} conversations (the prompt is what both share); optional: "margin" (a number), \
            "preference" (LLaMA2's level: significantly_better, better, slightly_better, negligibly_better, whose margin \
            comes from --margin's table) and "safety" (true/false). A tenth of the prompts is held out; the accuracy per \
            preference level (pairs without one: unlabelled) on them is printed at the end (and written to \
            OUT.eval.json). Writes OUT (the trunk) and OUT.head.json (the head, what `rlhf worker --head` loads).
            """
        )

        @Option(help: "Preference pairs (JSON lines or a JSON array).")
        var data: String
        @Option(name: .customLong("init"), help: "Checkpoint to start from (the chat model).")
        var initial: String
        @Option(help: "Margin table: small (1, 2/3, 1/3, 0), large (3, 2, 1, 0) or none.")
        var margin: MarginTable = .small
        @Option(help: "Pairs to train on: all, helpfulness (not flagged safety) or safety (flagged).")
        var subset: PreferenceSubset = .all
        @OptionGroup var common: Common

        func run() throws {
            do {
                let settings = try common.settings(batch: 16, epochs: 1, learningRate: 1e-4)
                let (tokenizer, resume, weights) = try common.startingPoint(initial: initial)
                let (pairs, issues) = try TrainingData.preferences(data, tokenizer: tokenizer, seqLen: weights.config.seqLen, subset: subset,
                                                                   policy: common.onBadData, keys: common.dataKeys)
                let (train, heldOut) = Trainers.heldOutSplit(pairs)
                common.report(issues, kept: pairs.count, what: "\(data) (\(subset.rawValue))")
                print("\(train.count) pairs to train on, \(heldOut.count) held out")
                let model = TrainableTransformer(weights: weights, pool: ComputePool(threads: common.threads))
                var head = resume?.heads["reward"] ?? ScalarHead(dim: weights.config.dim, seed: settings.seed)
                let monitor = try common.monitor(resuming: resume != nil)
                let outcome = try Trainers.rewardModel(model, head: &head, pairs: train, margins: margin, settings: settings,
                                                       statePath: common.statePath, resume: resume, progress: monitor.step,
                                                       shouldStop: { monitor.shouldStop })
                try monitor.finish(outcome, command: TrainCommand.commandLine)
                let written = try common.writeModel(model.weights, near: initial)
                let encoder = JSONEncoder()
                try encoder.encode(head).write(to: URL(fileURLWithPath: common.outStem + ".head.json"))
                print("wrote \(written) and \(common.outStem).head.json")
                let accuracy = try Trainers.rankingAccuracy(model, head: head, pairs: heldOut)
                var table: [String: Any] = [:]
                print("held-out accuracy per preference level (\(heldOut.count) pairs):")
                for name in PreferenceLevel.allCases.map(\.rawValue) + ["unlabelled"] {
                    guard let a = accuracy[name], a.total > 0 else { continue }
                    print("  " + name.padding(toLength: 20, withPad: " ", startingAt: 0)
                          + String(format: " %6.1f%%  (%d of %d)", 100 * Double(a.correct) / Double(a.total), a.correct, a.total))
                    table[name] = ["correct": a.correct, "total": a.total, "accuracy": Double(a.correct) / Double(a.total)]
                }
                let correct = accuracy.values.reduce(0) { $0 + $1.correct }, total = accuracy.values.reduce(0) { $0 + $1.total }
                if total > 0 {
                    print("  " + "all".padding(toLength: 20, withPad: " ", startingAt: 0)
                          + String(format: " %6.1f%%  (%d of %d)", 100 * Double(correct) / Double(total), correct, total))
                    table["all"] = ["correct": correct, "total": total, "accuracy": Double(correct) / Double(total)]
                }
                try Data(jsonLine(table).utf8).write(to: URL(fileURLWithPath: common.outStem + ".eval.json"))
                common.summarise(issues, what: data)
            } catch {
                throw cliFailure(error)
            }
        }
    }
}
