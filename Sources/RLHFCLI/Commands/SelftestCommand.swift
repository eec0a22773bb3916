import Foundation
import ArgumentParser
import LlamaCore
import LlamaTraining
import RLHF

/// `rlhf selftest`: parity against reference fixtures.
struct SelftestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check the core against reference fixtures: greedy ids exactly and logits within 1e-3 (NAME.generate.json); SFT, reward-model, PPO, GRPO, Dr. GRPO, DPO and IPO losses and gradients, the group methods' advantages and one AdamW step (NAME.sft/rm/ppo/grpo/dpo/adamw-step.json), within the fixtures' tolerances."
    )

    @Option(help: "Directory of fixture sets.")
    var fixtures: String
    @Option(help: "float32 (the exact checks) or bfloat16 (reports, without a verdict, how far bfloat16 products move logits, greedy ids, and the SFT loss and gradient).")
    var precision: WeightPrecision = .float32

    func run() throws {
        let checks: [SelfTest.Check]
        do {
            checks = try SelfTest.run(directory: fixtures, precision: precision) { print($0.line) }
                + TrainingSelfTest.run(directory: fixtures, precision: precision) { print($0.line) }
                + (precision == .float32 ? try SelftestCommand.advantageChecks(directory: fixtures) { print($0.line) } : [])
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

    /// GRPO's, Dr. GRPO's and RLOO's advantages (`GroupAdvantage`) against each NAME.grpo.json's.
    static func advantageChecks(directory: String, report: (SelfTest.Check) -> Void) throws -> [SelfTest.Check] {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".grpo.json") }.sorted()
        var checks: [SelfTest.Check] = []
        for file in files {
            let path = (directory as NSString).appendingPathComponent(file), name = String(file.dropLast(".grpo.json".count))
            guard let data = FileManager.default.contents(atPath: path),
                  let fixture = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let rewards = (fixture["rewards"] as? [NSNumber])?.map(\.doubleValue), let group = fixture["group_size"] as? Int,
                  let eps = (fixture["std_eps"] as? NSNumber)?.doubleValue, let expected = fixture["advantages"] as? [String: [NSNumber]] else {
                throw LlamaError.io(path: path, reason: "not a group-advantage fixture (rewards, group_size, std_eps, advantages)")
            }
            for kind in GroupAdvantage.allCases {
                guard let reference = expected[kind.rawValue]?.map(\.doubleValue) else { continue }
                let ours = kind.advantages(rewards: rewards, group: group, eps: eps)
                let error = zip(ours, reference).map { abs($0 - $1) }.max() ?? .infinity
                let check = SelfTest.Check(name: "\(name): \(kind.rawValue) advantages", passed: ours.count == reference.count && error <= 1e-9,
                                           maxError: error, tolerance: 1e-9)
                report(check)
                checks.append(check)
            }
        }
        return checks
    }
}
