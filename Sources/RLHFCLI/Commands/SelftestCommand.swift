import ArgumentParser
import LlamaCore

/// `rlhf selftest`: parity against reference fixtures.
struct SelftestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check the core against reference fixtures (NAME.bin + NAME.generate.json): greedy ids exactly, logits within 1e-3."
    )

    @Option(help: "Directory of fixture sets.")
    var fixtures: String
    @Option(help: "float32 (exact checks) or bfloat16 (reports the bfloat16 weights' effect; logits within --bf16-tolerance).")
    var precision: WeightPrecision = .float32
    @Option(name: .customLong("bf16-tolerance"), help: "Logit tolerance for --precision bfloat16.")
    var bf16Tolerance: Double = 0.1

    func run() throws {
        let checks: [SelfTest.Check]
        do {
            checks = try SelfTest.run(directory: fixtures, precision: precision, bf16Tolerance: bf16Tolerance) {
                print($0.line)
            }
        } catch {
            throw cliFailure(error)
        }
        let failed = checks.filter { !$0.passed }.count
        print("selftest: \(checks.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}
