import ArgumentParser
import Foundation
import LlamaCore
import Recipe
import Workers

extension WeightPrecision: ExpressibleByArgument {}
extension KVCache.Precision: ExpressibleByArgument {}
extension ChatFormat: ExpressibleByArgument {}

/// Writes a line to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Serialises a JSON-compatible value on one line with sorted keys.
func jsonLine(_ object: Any) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    return String(decoding: data, as: UTF8.self)
}

/// Turns core errors into clean command-line failures (message, exit code 1, no stack trace). A
/// `ValidationError` raised while running is printed the same way: passed on, ArgumentParser would
/// print it with the root command's usage, which says nothing of the subcommand at fault.
func cliFailure(_ error: any Error) -> any Error {
    if error is ExitCode || error is CleanExit { return error }
    printError("error: \(error)")
    // A scheduler's refusal ends the launch with the scheduler command's own exit status.
    if let failure = error as? ClusterLaunch.Failure, let status = failure.exitStatus, status != 0 { return ExitCode(status) }
    return ExitCode.failure
}

/// Reads standard input as JSON lines: each line holding a JSON object goes to `body` (blank lines are
/// skipped); a line that is not one, or whose `body` throws, is reported on stderr with its number and its
/// error goes to `failed` (which may answer in its place). At the end, a failure of any line fails the
/// command, saying how many of them `failedWhat` (e.g. "could not be scored").
func forEachStandardInputJSONLine(failedWhat: String, failed: (any Error) -> Void = { _ in },
                                  _ body: ([String: Any]) throws -> Void) throws {
    var lineNumber = 0, failures = 0
    while let line = readLine(strippingNewline: true) {
        lineNumber += 1
        if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
        do {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw LlamaError.invalidInput("not a JSON object")
            }
            try body(object)
        } catch {
            printError("error: stdin line \(lineNumber): \(error)")
            failed(error)
            failures += 1
        }
        fflush(nil)
    }
    if failures > 0 {
        printError("error: \(failures) of \(lineNumber) lines \(failedWhat)")
        throw ExitCode.failure
    }
}

/// Output files are checked before a command works (a place that cannot be written was found only
/// when the result was written, after the work).
enum OutputCheck {
    /// Throws naming `option` unless `path` can be written: its folder exists, and it or the folder is writable.
    static func writable(_ path: String, option: String) throws {
        let folder = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("\(option): cannot write \(path): no directory \(folder)")
        }
        let target = FileManager.default.fileExists(atPath: path) ? path : folder
        guard access(target, W_OK) == 0 else {
            throw ValidationError("\(option): cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// Range checks of numeric options, each naming the option, the range and the value given.
enum OptionCheck {
    /// An integer option (nil: not given) in `range`.
    static func integer<T: BinaryInteger>(_ value: T?, _ option: String, _ range: ClosedRange<T>) throws {
        guard let value, !range.contains(value) else { return }
        throw ValidationError("\(option) must be an integer in \(range.lowerBound)...\(range.upperBound), got \(value)")
    }

    /// A finite number option (nil: not given) in `range`, without its lower bound when `openBelow`
    /// and without its upper bound when `openAbove`.
    static func number<T: BinaryFloatingPoint & LosslessStringConvertible>(_ value: T?, _ option: String, _ range: ClosedRange<T>,
                                                                          openBelow: Bool = false, openAbove: Bool = false) throws {
        guard let value else { return }
        let inside = value.isFinite && range.contains(value) && !(openBelow && value == range.lowerBound)
            && !(openAbove && value == range.upperBound)
        guard !inside else { return }
        throw ValidationError("\(option) must be a number in \(openBelow ? "(" : "[")\(range.lowerBound), \(range.upperBound)\(openAbove ? ")" : "]"), got \(value)")
    }

    /// Worker ids and run ids: 1 to 128 bytes of printable ASCII without spaces or '/' (they travel as
    /// ZeroMQ routing ids, journal keys and log file names).
    static func name(_ name: String, option: String) throws {
        guard !name.isEmpty, name.utf8.count <= 128, name.utf8.allSatisfy({ (0x21 ... 0x7E).contains($0) && $0 != UInt8(ascii: "/") }) else {
            throw ValidationError("\(option) must be 1 to 128 printable ASCII characters without spaces or '/', got \"\(name)\"")
        }
    }

    /// `--chat-template-kwargs`: a JSON object of what the model's own chat template reads (none when
    /// not given).
    static func chatTemplateArguments(_ text: String?) throws -> ChatTemplateArguments {
        guard let text else { return ChatTemplateArguments() }
        do {
            return try ChatTemplateArguments(json: text, key: "--chat-template-kwargs")
        } catch let error as ChatTemplateArguments.Invalid {
            throw ValidationError(error.description)
        }
    }

    /// Compute threads: `ComputePool.threadCounts` (1...256).
    static func threads(_ value: Int?, _ option: String = "--threads") throws { try integer(value, option, ComputePool.threadCounts) }

    /// A comma-separated list of thread counts, each in 1...256 (`1,2`).
    static func threadList(_ text: String, _ option: String = "--threads") throws -> [Int] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        var counts: [Int] = []
        for part in parts {
            guard let n = Int(part) else {
                throw ValidationError("\(option) must be thread counts separated by commas, e.g. 1,2; got \"\(text)\"")
            }
            try threads(n, option)
            counts.append(n)
        }
        return counts
    }
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


/// Memory a command is about to ask for, checked against what the machine has available
/// (`MemAvailable` in /proc/meminfo) before it allocates: a batch too large for the machine is refused
/// with the memory it would need, instead of an allocation failure partway.
enum MemoryBudget {
    /// Bytes available now (nil where /proc/meminfo cannot be read).
    static func available() -> Int? { WorkerMemory.availableBytes() }

    /// Throws when `bytes` (what `what` needs) exceed the memory available.
    static func check(_ bytes: Int, for what: String) throws {
        guard let available = available(), bytes > available else { return }
        let gib = { (b: Int) in String(format: "%.1f GiB", Double(b) / Double(1 << 30)) }
        throw ValidationError("\(what) needs about \(gib(bytes)) of memory, and this machine has \(gib(available)) available")
    }
}
