import ArgumentParser
import Foundation
import LlamaCore

extension WeightPrecision: ExpressibleByArgument {}

/// Writes a line to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Serialises a JSON-compatible value on one line with sorted keys.
func jsonLine(_ object: Any) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    return String(decoding: data, as: UTF8.self)
}

/// Turns core errors into clean command-line failures (message, exit code 1, no stack trace).
func cliFailure(_ error: any Error) -> any Error {
    if error is ExitCode || error is ValidationError || error is CleanExit { return error }
    printError("error: \(error)")
    return ExitCode.failure
}

/// Parses `1,2,3` into token ids.
func parseIds(_ text: String) throws -> [Int32] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    var ids: [Int32] = []
    for part in parts where !part.isEmpty {
        guard let id = Int32(part) else { throw ValidationError("--prompt-ids: '\(part)' is not an integer token id") }
        ids.append(id)
    }
    return ids
}

/// The 1, 5 and 15 minute load averages (benchmarks print them beside their figures).
func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "unknown"
}
