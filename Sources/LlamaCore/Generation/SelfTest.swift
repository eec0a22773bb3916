import Foundation

/// Parity checks of the core against reference fixtures (outputs of llama2.c and PyTorch on the same
/// weights), as run by `rlhf selftest` and the tests.
public enum SelfTest {
    /// One check's outcome.
    public struct Check: Sendable {
        /// `NAME: what`.
        public var name: String
        /// Whether the check met its tolerance.
        public var passed: Bool
        /// Largest error seen (absolute for logits; mismatching tokens for ids).
        public var maxError: Double
        /// The tolerance the error was held to.
        public var tolerance: Double
        /// Extra context (first mismatch, ...).
        public var detail: String
        /// A measurement reported without a verdict (bfloat16 weights are not meant to be exact).
        public var informational = false

        /// A check's outcome.
        public init(name: String, passed: Bool, maxError: Double, tolerance: Double, detail: String = "") {
            self.name = name
            self.passed = passed
            self.maxError = maxError
            self.tolerance = tolerance
            self.detail = detail
        }

        /// One line for the terminal.
        public var line: String {
            let status = informational ? "INFO" : passed ? "PASS" : "FAIL"
            let err = String(format: "%.3g", maxError)
            return "\(status) \(name): max error \(err) (tolerance \(tolerance))\(detail.isEmpty ? "" : "; \(detail)")"
        }
    }

    /// The `generate` fixture of one model.
    struct GenerateFixture: Decodable {
        let prompt_ids: [Int32]
        let greedy_ids: [Int32]
        let logits_at: [String: [Double]]
    }

    /// Fixture set names in `directory`: every `NAME.bin` with a `NAME.generate.json` beside it.
    public static func fixtureNames(in directory: String) throws -> [String] {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw LlamaError.io(path: directory, reason: "cannot list fixtures: \(error.localizedDescription)")
        }
        return files.filter { $0.hasSuffix(".generate.json") }
            .map { String($0.dropLast(".generate.json".count)) }
            .filter { files.contains($0 + ".bin") }
            .sorted()
    }

    /// Runs every check of every fixture set in `directory`, calling `report` as each finishes.
    /// With `.bfloat16` the same measurements are reported as information (how far bfloat16 weights
    /// move the logits and the greedy path), not held to the float32 tolerances.
    public static func run(directory: String, precision: WeightPrecision = .float32,
                           report: (Check) -> Void = { _ in }) throws -> [Check] {
        let names = try fixtureNames(in: directory)
        guard !names.isEmpty else {
            throw LlamaError.io(path: directory, reason: "no fixture sets (NAME.bin with NAME.generate.json) found")
        }
        var checks: [Check] = []
        for name in names {
            for var check in try runGenerate(name: name, directory: directory, precision: precision) {
                if precision == .bfloat16 {
                    check.informational = true
                    check.passed = true
                }
                report(check)
                checks.append(check)
            }
        }
        return checks
    }

    /// Decodes a JSON fixture, with the path in any error.
    public static func loadJSON<T: Decodable>(_ type: T.Type, path: String) throws -> T {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LlamaError.io(path: path, reason: "cannot read fixture")
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw LlamaError.io(path: path, reason: "malformed fixture: \(error)")
        }
    }

    static func runGenerate(name: String, directory: String, precision: WeightPrecision) throws -> [Check] {
        let base = (directory as NSString).appendingPathComponent(name)
        let fixture = try loadJSON(GenerateFixture.self, path: base + ".generate.json")
        let model = try LlamaModel(checkpoint: base + ".bin", precision: precision)
        let transformer = Transformer(model: model)
        let tolerance = 1e-3
        let label = precision == .float32 ? name : "\(name) [bfloat16]"
        var checks: [Check] = []

        // Greedy ids through prefill + incremental decode.
        let generator = TextGenerator(transformer: transformer)
        let result = try generator.generate(GenerationRequest(promptIds: fixture.prompt_ids,
                                                              maxNewTokens: fixture.greedy_ids.count,
                                                              sampling: .greedy, stopTokens: []))
        let mismatches = zip(result.ids, fixture.greedy_ids).filter { $0 != $1 }.count
            + abs(result.ids.count - fixture.greedy_ids.count)
        let firstBad = zip(result.ids, fixture.greedy_ids).enumerated().first { $0.element.0 != $0.element.1 }
        checks.append(Check(name: "\(label): greedy ids (\(fixture.greedy_ids.count) tokens)",
                            passed: mismatches == 0,
                            maxError: Double(mismatches), tolerance: 0,
                            detail: firstBad.map { "first mismatch at \($0.offset): got \($0.element.0), expected \($0.element.1)" } ?? ""))

        // Logits at the fixture's positions, through one batched prefill of the whole sequence and
        // through token-by-token decode.
        let sequence = fixture.prompt_ids + fixture.greedy_ids
        let positions = fixture.logits_at.keys.compactMap(Int.init).sorted()
        guard let last = positions.last, last < sequence.count else {
            throw LlamaError.io(path: base + ".generate.json", reason: "logits_at positions outside the sequence")
        }
        let prefillCache = transformer.makeCache()
        let all = try transformer.prefill(Array(sequence[...last]), cache: prefillCache, allLogits: true)
        var prefillError = 0.0
        for p in positions {
            prefillError = max(prefillError, maxAbsDiff(all.row(p), fixture.logits_at[String(p)]!))
        }
        checks.append(Check(name: "\(label): logits_at \(positions) (batched prefill)",
                            passed: prefillError <= tolerance, maxError: prefillError, tolerance: tolerance, detail: ""))
        let cache = transformer.makeCache()
        var decodeError = 0.0
        for p in 0...last {
            let logits = try transformer.decode(sequence[p], cache: cache)
            if let reference = fixture.logits_at[String(p)] {
                decodeError = max(decodeError, maxAbsDiff(logits.row(0), reference))
            }
        }
        checks.append(Check(name: "\(label): logits_at \(positions) (incremental decode)",
                            passed: decodeError <= tolerance, maxError: decodeError, tolerance: tolerance, detail: ""))
        return checks
    }

    static func maxAbsDiff(_ a: [Float], _ b: [Double]) -> Double {
        guard a.count == b.count else { return .infinity }
        var worst = 0.0
        for i in a.indices { worst = max(worst, abs(Double(a[i]) - b[i])) }
        return worst
    }
}
