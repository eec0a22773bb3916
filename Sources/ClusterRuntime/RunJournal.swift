import Foundation
import LlamaCore
import Wire

/// The coordinator's journal: an append-only file in the run directory (`RUN_DIR/journal.jsonl`) from
/// which a coordinator restarted after a crash (even `kill -9`) resumes the plan without losing or
/// repeating anything it had accepted.
///
/// One record a line: the record as JSON, a tab, and the CRC-32C of the JSON in hex. Every append is
/// flushed to the disk (`fsync`) before it returns, and the coordinator appends a task's result before
/// it acts on it (frees the worker's slot, hands the result to the plan). On opening, a torn last line
/// (a crash in the middle of a write: no newline, or a checksum that does not match) is cut off, since
/// nothing was done with it; a damaged line anywhere else is an error naming the line.
public final class RunJournal: @unchecked Sendable {
    /// One journal record.
    public enum Record: Codable, Equatable, Sendable {
        /// A run begins: the digest (CRC-32C) of its spec's text.
        case run(specDigest: UInt32)
        /// The run's identity: its workers carry it, and another run's coordinator refuses them.
        case runIdentity(id: String)
        /// The coordinator bound this endpoint (a restart binds it again: its workers know no other).
        case coordinator(endpoint: String)
        /// A worker process the launcher started: its id, host and pid (to adopt it after a restart).
        case worker(id: String, host: String, pid: Int32)
        /// The launcher got Slurm allocation `jobID` for the workers of host `host` (a resumed launch
        /// reuses it while it runs, and adopts the workers' steps in it).
        case allocation(host: String, jobID: String)
        /// A plan step begins.
        case stepBegin(index: Int)
        /// A task's result, accepted: its request id and the frames as they arrived.
        case result(requestID: UInt64, frames: [Data])
        /// A plan step is done: the policy version, round and the last weight announcement of each role
        /// (by role name) after it.
        case stepDone(index: Int, policyVersion: UInt64, round: UInt32, announces: [String: Data])
        /// The plan finished.
        case finished
    }

    /// What a journal holds, read back.
    public struct Recovered: Sendable {
        /// The spec digest of the run (nil for a new journal).
        public var specDigest: UInt32?
        /// The endpoint the coordinator last bound.
        public var endpoint: String?
        /// The run's identity (nil in a journal written before runs had one).
        public var runID: String?
        /// The last record of each worker id.
        public var workers: [String: (host: String, pid: Int32)] = [:]
        /// The last Slurm allocation of each host, by host name.
        public var allocations: [String: String] = [:]
        /// Steps done, by index, with what `stepDone` recorded.
        public var doneSteps: [Int: (policyVersion: UInt64, round: UInt32, announces: [String: Data])] = [:]
        /// Accepted results of steps not yet done, by request id.
        public var results: [UInt64: [Data]] = [:]
        /// Whether the plan finished.
        public var finished = false
        /// Whether a torn last record was cut off.
        public var cutTornTail = false
        /// Records read.
        public var records = 0

        /// The highest step index done, if any.
        public var lastDoneStep: Int? { doneSteps.keys.max() }

        /// Takes in one more record, in journal order (the replay's state machine: no I/O).
        public mutating func replay(_ record: Record) {
            records += 1
            switch record {
            case let .run(digest): specDigest = digest
            case let .coordinator(endpoint): self.endpoint = endpoint
            case let .runIdentity(id): runID = id
            case let .worker(id, host, pid): workers[id] = (host, pid)
            case let .allocation(host, jobID): allocations[host] = jobID
            case .stepBegin: break
            case let .result(requestID, frames): results[requestID] = frames
            case let .stepDone(index, version, round, announces):
                doneSteps[index] = (version, round, announces)
                // Results of a finished step are never asked for again.
                let first = RunJournal.firstRequestID(ofStep: index), next = RunJournal.firstRequestID(ofStep: index + 1)
                results = results.filter { $0.key < first || $0.key >= next }
            case .finished: finished = true
            }
        }
    }

    /// A journal that cannot be read: the file, the line and why.
    public struct Corrupt: Error, CustomStringConvertible {
        public let path: String
        public let line: Int
        public let reason: String
        public var description: String { "journal \(path) is damaged at line \(line): \(reason)" }
    }

    /// The journal's path.
    public let path: String
    private let handle: FileHandle
    private let lock = NSLock()
    private let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return e
    }()

    /// Opens (creating it if needed) the journal at `path` and reads back what it holds.
    public static func open(at path: String) throws -> (RunJournal, Recovered) {
        let fm = FileManager.default
        if !fm.fileExists(atPath: path) {
            guard fm.createFile(atPath: path, contents: nil) else { throw Corrupt(path: path, line: 0, reason: "cannot create the file") }
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let (recovered, goodLength) = try read(data, path: path)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        if goodLength < data.count {
            // Cut the torn record off so that the next append starts on a clean line.
            try handle.truncate(atOffset: UInt64(goodLength))
            try handle.synchronize()
        }
        try handle.seekToEnd()
        return (RunJournal(path: path, handle: handle), recovered)
    }

    private init(path: String, handle: FileHandle) {
        self.path = path
        self.handle = handle
    }

    deinit { try? handle.close() }

    /// Appends `record` and flushes it to the disk before returning.
    public func append(_ record: Record) throws {
        let json = try encoder.encode(record)
        var crc = CRC32C()
        crc.update(Array(json))
        var line = json
        line.append(contentsOf: Array("\t\(String(format: "%08x", crc.value))\n".utf8))
        try lock.withLock {
            try handle.write(contentsOf: line)
            try handle.synchronize()
        }
    }

    /// Parses a journal's bytes: what they hold and how many bytes of whole, valid records they start with.
    static func read(_ data: Data, path: String) throws -> (Recovered, Int) {
        var recovered = Recovered()
        let decoder = JSONDecoder()
        let bytes = [UInt8](data)
        var start = 0, lineNumber = 0
        while start < bytes.count {
            lineNumber += 1
            let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n"))
            let end = newline ?? bytes.count
            let line = Array(bytes[start ..< end])
            let isLast = newline == nil || end + 1 >= bytes.count
            func damaged(_ reason: String) throws -> (Recovered, Int) {
                // The last line may be torn by a crash mid-write: nothing was done with it; cut it off.
                if isLast {
                    recovered.cutTornTail = true
                    return (recovered, start)
                }
                throw Corrupt(path: path, line: lineNumber, reason: reason)
            }
            guard newline != nil else { return try damaged("the record has no end (torn write)") }
            guard let tab = line.lastIndex(of: UInt8(ascii: "\t")), line.count - tab - 1 == 8,
                  let stored = UInt32(String(decoding: line[(tab + 1)...], as: UTF8.self), radix: 16) else {
                return try damaged("no checksum at the end of the line")
            }
            let json = Array(line[..<tab])
            var crc = CRC32C()
            crc.update(json)
            guard crc.value == stored else {
                return try damaged(String(format: "checksum mismatch (stored %08x, computed %08x)", stored, crc.value))
            }
            let record: Record
            do { record = try decoder.decode(Record.self, from: Data(json)) } catch { return try damaged("not a journal record: \(error)") }
            recovered.replay(record)
            start = end + 1
        }
        return (recovered, bytes.count)
    }

    /// The request id of the first task of plan step `index`: each step's tasks are numbered from
    /// here in the order the step asks for them, so a step replayed after a restart asks for the same
    /// ids and finds the results already accepted.
    public static func firstRequestID(ofStep index: Int) -> UInt64 { UInt64(index + 1) << 32 }
}
