import ArgumentParser
import EmbeddedTask
import Foundation
import LlamaCore
import LlamaTraining
import Workers

/// `rlhf eval`: a policy on the embedded task's held-out prompts, judged by the hidden annotator.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Judge a checkpoint on the embedded task's held-out prompts: helpfulness and unsafe rates; with --against, the win rate.",
        discussion: """
        Each prompt gets one sample (temperature 1 by default); with --best-of K and --reward-model, K samples \
        and the reward model keeps the best (the first sample is the plain one, so A with --best-of against the \
        same checkpoint compares best-of-K with plain sampling on the same draws). Ties count half.
        """
    )

    @Option(help: "The policy judged (A).")
    var checkpoint: String
    @Option(help: "Another policy to compare with (B): the win rate of A over B.")
    var against: String?
    @Option(help: "Tokenizer (default: a model directory's own, else tokenizer.bin beside the checkpoint).")
    var tokenizer: String?
    @Option(help: "Evaluation prompts to use (default: all of them).")
    var prompts: Int?
    @Option(help: "Seed of the prompt sample and of sampling.")
    var seed: UInt64 = 1
    @Option(help: "Sampling temperature.")
    var temperature: Float = 1
    @Option(help: "Nucleus sampling threshold.")
    var topP: Float = 1
    @Option(help: "Most tokens per response.")
    var maxNewTokens = 96
    @Option(help: "Samples per prompt for A, the best kept by --reward-model.")
    var bestOf = 1
    @Option(help: "Reward model checkpoint for --best-of (its head: CKPT.head.json, or --reward-head).")
    var rewardModel: String?
    @Option(help: "Reward model head (JSON).")
    var rewardHead: String?
    @Option(help: "Compute threads.")
    var threads = 1
    @Option(help: "Write every prompt with A's (and B's) response and the annotator's judgement as JSON lines here.")
    var samplesOut: String?
    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func validate() throws {
        try OptionCheck.integer(bestOf, "--best-of", 1 ... 1_024)
        if bestOf > 1 && rewardModel == nil { throw ValidationError("--best-of \(bestOf) needs --reward-model to pick the best") }
        try OptionCheck.integer(prompts, "--prompts", 1 ... 10_000_000)
        try OptionCheck.number(temperature, "--temperature", 0 ... 100)
        try OptionCheck.number(topP, "--top-p", 0 ... 1, openBelow: true)
        try OptionCheck.integer(maxNewTokens, "--max-new-tokens", 1 ... 1_000_000)
        try OptionCheck.threads(threads)
    }

    func run() throws {
        do {
            if let samplesOut { try OutputCheck.writable(samplesOut, option: "--samples-out") }
            try evaluate()
        } catch {
            throw cliFailure(error)
        }
    }

    private func evaluate() throws {
        let tokenizerPath = tokenizer ?? Tokenizer.defaultPath(forCheckpoint: checkpoint)
        let tok = try Tokenizer(path: tokenizerPath)
        let pool = ComputePool(threads: threads)
        defer { pool.shutdown() }
        var settings = TaskEvaluation.Settings.default
        settings.prompts = prompts
        settings.seed = seed
        settings.sampling = SamplingSettings(temperature: temperature, topP: topP)
        settings.maxNewTokens = maxNewTokens
        let chosen = TaskEvaluation.prompts(count: prompts, seed: seed)
        let annotator = Annotator()
        func responses(_ path: String, bestOf: Int) throws -> [(text: String, tokens: Int)] {
            let model = try LlamaModel(checkpoint: path)
            try tok.check(against: model.config, path: tokenizerPath)
            var s = settings
            s.bestOf = bestOf
            var scorer: (([[Int32]]) throws -> [Float])?
            if bestOf > 1, let rewardModel {
                let weights = try Checkpoint.read(path: rewardModel).weights
                let head = try RewardModelService.loadHead(path: rewardHead ?? rewardModel + ".head.json")
                let trunk = TrainableTransformer(weights: weights, pool: pool)
                trunk.prepareForScoring()
                scorer = { try Trainers.scores(trunk, head: head, sequences: $0) }
            }
            return try TaskEvaluation.responses(chosen, generator: TextGenerator(transformer: Transformer(model: model, pool: pool)),
                                                tokenizer: tok, settings: s, scorer: scorer)
        }
        let started = Date()
        let a = try responses(checkpoint, bestOf: bestOf)
        let b = try against.map { try responses($0, bestOf: 1) }
        let reportA = TaskEvaluation.report(chosen, a, annotator: annotator)
        let reportB = b.map { TaskEvaluation.report(chosen, $0, annotator: annotator) }
        let win = b.map { TaskEvaluation.winRate(chosen, a.map(\.text), $0.map(\.text), annotator: annotator) }
        if let samplesOut {
            var lines = ""
            for (i, prompt) in chosen.enumerated() {
                var record: [String: Any] = ["prompt": prompt.text, "safety": prompt.request.isSafety, "a": a[i].text]
                let ja = annotator.judge(prompt, a[i].text)
                record["a_helpfulness"] = ja.helpfulness
                record["a_unsafe"] = ja.unsafe
                if let b {
                    let jb = annotator.judge(prompt, b[i].text)
                    record["b"] = b[i].text
                    record["b_helpfulness"] = jb.helpfulness
                    record["b_unsafe"] = jb.unsafe
                    record["verdict"] = "\(annotator.compare(prompt, a[i].text, b[i].text))"
                }
                lines += jsonLine(record) + "\n"
            }
            try Data(lines.utf8).write(to: URL(fileURLWithPath: samplesOut))
        }
        let seconds = Date().timeIntervalSince(started)
        if json {
            var object: [String: Any] = ["prompts": chosen.count, "seconds": seconds, "a": EvalCommand.dictionary(reportA, checkpoint, bestOf)]
            if let reportB, let against { object["b"] = EvalCommand.dictionary(reportB, against, 1) }
            if let win { object["win_rate"] = ["rate": win.rate, "wins": win.wins, "ties": win.ties, "losses": win.losses] }
            print(jsonLine(object))
            return
        }
        print("\(chosen.count) held-out prompts (\(chosen.filter(\.request.isSafety).count) safety), temperature \(temperature), seed \(seed)")
        print("policy".padding(toLength: 44, withPad: " ", startingAt: 0) + "  helpfulness  helpful  unsafe  refusals  tokens")
        for (name, report) in [("A " + EvalCommand.label(checkpoint, bestOf), reportA)] + (reportB.map { [("B " + EvalCommand.label(against!, 1), $0)] } ?? []) {
            print(String(name.suffix(44)).padding(toLength: 44, withPad: " ", startingAt: 0)
                  + String(format: "  %11.3f  %6.1f%%  %5.1f%%  %7.1f%%  %6.1f", report.helpfulness, 100 * report.helpfulRate,
                           100 * report.unsafeRate, 100 * report.refusalRate, report.meanTokens))
        }
        if let win {
            print(String(format: "win rate of A over B: %.1f%% (%d wins, %d ties, %d losses)", 100 * win.rate, win.wins, win.ties, win.losses))
        }
        print(String(format: "in %.1f s", seconds))
    }

    static func label(_ path: String, _ bestOf: Int) -> String {
        (path as NSString).lastPathComponent + (bestOf > 1 ? " (best of \(bestOf))" : "")
    }

    static func dictionary(_ r: TaskEvaluation.Report, _ path: String, _ bestOf: Int) -> [String: Any] {
        ["checkpoint": path, "best_of": bestOf, "helpfulness": r.helpfulness, "helpful_rate": r.helpfulRate, "unsafe_rate": r.unsafeRate,
         "refusal_rate": r.refusalRate, "mean_tokens": r.meanTokens]
    }
}
