import Foundation
import Synchronization

/// A long-running external command spoken to in JSON lines: each request is one line on its stdin,
/// each answer one line on its stdout, in order. Judges and reward functions are such commands. The
/// process starts at the first batch and serves every later one; a batch's lines are written while
/// its answers are read (no pipe deadlock however large the batch). A command that exits, answers
/// something other than a JSON object, or takes longer than the timeout fails the batch with its exit
/// status and the end of its stderr; the next batch starts it afresh.
public final class JSONLineCommand: Sendable {
    /// What a failed batch says.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// The argument vector (the executable first; a bare name is looked up on PATH).
    public let arguments: [String]
    /// Seconds a batch may take.
    public let timeoutSeconds: Double
    /// Working directory of the process (nil: ours).
    public let directory: String?

    private struct Running {
        let process: Process
        let input: FileHandle
        let output: FileHandle
        var pending = Data()
    }
    private let running = Mutex<Running?>(nil)
    /// A value shared with the threads and handlers of a call.
    private final class Shared<Value: Sendable>: Sendable {
        let value: Mutex<Value>
        init(_ value: Value) { self.value = Mutex(value) }
        func get() -> Value { value.withLock { $0 } }
        func set(_ new: Value) { value.withLock { $0 = new } }
    }
    /// The end of the process's stderr (the last 4 KiB), for failures.
    private let stderrTail = Shared(Data())

    /// A command of `arguments`, run in `directory`.
    public init(arguments: [String], timeoutSeconds: Double = 600, directory: String? = nil) {
        self.arguments = arguments
        self.timeoutSeconds = timeoutSeconds
        self.directory = directory
    }

    deinit { stop() }

    /// A JSON number of an answer, finite, read from its text exactly as the command wrote it
    /// (JSONSerialization gives a number with a fraction as an NSDecimalNumber whose doubleValue can be one
    /// ulp off); nil for anything else, booleans included.
    public static func finiteNumber(_ value: Any?) -> Double? {
        guard let number = value as? NSNumber, String(cString: number.objCType) != "c",
              let x = Double(number.stringValue), x.isFinite else { return nil }
        return x
    }

    /// The command as a shell would show it.
    public var commandLine: String { arguments.joined(separator: " ") }

    /// Ends the process (it is started again by the next batch): its stdin closed, which ends a command
    /// that reads to the end; one still running a second later is killed with what it started. (SIGKILL,
    /// not SIGTERM: a child spawned from a thread that blocks signals, as Dispatch's threads do, inherits
    /// the blocked SIGTERM.)
    public func stop() {
        running.withLock { state in
            guard let current = state else { return }
            try? current.input.close()
            let deadline = Date().addingTimeInterval(1)
            while current.process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            if current.process.isRunning {
                kill(-current.process.processIdentifier, SIGKILL)
                kill(current.process.processIdentifier, SIGKILL)
            }
            current.process.waitUntilExit()
            state = nil
        }
    }

    /// The answers to `requests` (JSON objects), one per request in order.
    public func call(_ requests: [[String: Any]]) throws -> [[String: Any]] {
        guard !requests.isEmpty else { return [] }
        var payload = Data()
        for request in requests {
            payload.append(try JSONSerialization.data(withJSONObject: request, options: [.sortedKeys, .withoutEscapingSlashes]))
            payload.append(0x0A)
        }
        let lines: [Data]
        do {
            lines = try running.withLock { state -> [Data] in
                if state == nil { state = try start() }
                return try exchange(payload, count: requests.count, state: &state!)
            }
        } catch let failure as Failure {
            stop()
            throw failure
        }
        return try lines.enumerated().map { i, line in
            guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                stop()
                throw Failure(description: "\(commandLine): answer \(i + 1) of \(requests.count) is not a JSON object: "
                              + String(decoding: line.prefix(200), as: UTF8.self))
            }
            return object
        }
    }

    private func start() throws -> Running {
        let process = Process()
        var argv = arguments
        let executable = argv.removeFirst()
        if executable.contains("/") {
            // A relative path is the command's directory's, as a shell there would read it.
            let path = executable.hasPrefix("/") || directory == nil ? executable : (directory! as NSString).appendingPathComponent(executable)
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = argv
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [executable] + argv
        }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        stderrTail.set(Data())
        let tail = stderrTail
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            guard !chunk.isEmpty else {
                handle.readabilityHandler = nil
                return
            }
            tail.value.withLock { data in
                data.append(chunk)
                if data.count > 4096 { data = data.suffix(4096) }
            }
        }
        // A command that dies while we write to it must fail the call, not end this process.
        signal(SIGPIPE, SIG_IGN)
        do {
            try process.run()
        } catch {
            throw Failure(description: "\(commandLine): cannot start: \(error.localizedDescription)")
        }
        return Running(process: process, input: stdin.fileHandleForWriting, output: stdout.fileHandleForReading)
    }

    /// Writes `payload` on a thread of its own while reading `count` answer lines, within the timeout.
    private func exchange(_ payload: Data, count: Int, state: inout Running) throws -> [Data] {
        let input = state.input, process = state.process
        let writeError = Shared<String?>(nil)
        let writer = Thread {
            do { try input.write(contentsOf: payload) } catch { writeError.set("\(error)") }
        }
        writer.start()
        // The watchdog ends a command that does not answer in time; the read below then sees the pipe close.
        let timedOut = Shared(false)
        // The command leads its own process group (Foundation's Process makes it so): the kill reaches what
        // it started too (a shell's children), whose open stdout would otherwise keep the read waiting.
        let watchdog = DispatchWorkItem {
            timedOut.set(true)
            kill(-process.processIdentifier, SIGKILL)
            kill(process.processIdentifier, SIGKILL)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeoutSeconds, execute: watchdog)
        defer { watchdog.cancel() }
        var lines: [Data] = []
        lines.reserveCapacity(count)
        while lines.count < count {
            if let newline = state.pending.firstIndex(of: 0x0A) {
                lines.append(Data(state.pending[state.pending.startIndex..<newline]))
                state.pending = Data(state.pending[(newline + 1)...])
                continue
            }
            let chunk = state.output.availableData
            if chunk.isEmpty {
                process.waitUntilExit()
                if timedOut.get() {
                    throw Failure(description: "\(commandLine): no answer within \(timeoutSeconds) s (\(lines.count) of \(count) answered)")
                }
                throw Failure(description: "\(commandLine) exited with status \(process.terminationStatus) after \(lines.count) of \(count) answers"
                              + stderrSummary())
            }
            state.pending.append(chunk)
        }
        // Lines beyond the answers (a debug print on stdout) would be taken for the next batch's answers.
        if !state.pending.isEmpty {
            throw Failure(description: "\(commandLine) wrote more lines than the \(count) answers asked for (debug output belongs on stderr): "
                          + String(decoding: state.pending.prefix(200), as: UTF8.self))
        }
        if let error = writeError.get() {
            throw Failure(description: "\(commandLine): cannot write its input: \(error)" + stderrSummary())
        }
        return lines
    }

    /// The end of the command's stderr, for a failure message.
    private func stderrSummary() -> String {
        // Give the stderr reader a moment to drain what the process wrote before it died.
        Thread.sleep(forTimeInterval: 0.05)
        let text = String(decoding: stderrTail.get(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? "" : "; its stderr ends: " + String(text.suffix(1000))
    }
}
