import ArgumentParser
import LlamaCore
import LlamaTraining

/// `rlhf selftest`: parity against reference fixtures.
struct SelftestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check the core against reference fixtures: greedy ids exactly and logits within 1e-3 (NAME.generate.json); SFT, reward-model and PPO losses and gradients and one AdamW step (NAME.sft/rm/ppo/adamw-step.json), within the fixtures' tolerances."
    )

    @Option(help: "Directory of fixture sets.")
    var fixtures: String
    @Option(help: "float32 (the exact checks) or bfloat16 (reports, without a verdict, how far bfloat16 weights move logits and greedy ids).")
    var precision: WeightPrecision = .float32

    func run() throws {
        let checks: [SelfTest.Check]
        do {
            checks = try SelfTest.run(directory: fixtures, precision: precision) { print($0.line) }
                + (precision == .float32 ? try TrainingSelfTest.run(directory: fixtures) { print($0.line) } : [])
        } catch {
            throw cliFailure(error)
        }
        if precision == .bfloat16 {
            print("selftest: \(checks.count) bfloat16 measurements reported")
            return
        }
        let failed = checks.filter { !$0.passed }.count
        print("selftest: \(checks.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}
