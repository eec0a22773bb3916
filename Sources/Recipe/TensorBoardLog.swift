import Foundation
import LlamaCore
import SwiftProtobuf

/// Metrics as TensorBoard scalars: a launch's beside its metrics.jsonl, `RUN_DIR/tensorboard/events.out.tfevents.*`
/// (`tensorboard --logdir RUN_DIR/tensorboard`, or a directory of runs), and `rlhf train --tensorboard DIR`'s.
/// A resumed run adds a file, which TensorBoard reads with the others. Every number of a metrics record
/// becomes a scalar (`scalars(of:)`).
public struct TensorBoardLog {
    /// One scalar of a record: `stage[/model]/key`, at `step`.
    struct Scalar: Equatable {
        var tag: String
        var step: Int64
        var value: Float
    }

    /// The keys that place a record (its step, its time, its kind), not scalars of their own.
    static let placementKeys: Set<String> = ["stage", "model", "time", "step", "steps", "iteration", "policy_version", "version"]

    /// The scalars of one metrics record: each number in it (nested objects' numbers under `key/inner`),
    /// tagged `stage/key`, or `stage/model/key` for a reward model's record; at the record's policy version
    /// (one axis across SFT, the rounds and the evaluations), else the reward model's version, else its
    /// `step`, else `fallbackStep`. Text, booleans and nulls are left out.
    static func scalars(of record: [String: Any], fallbackStep: Int64) -> [Scalar] {
        guard let stage = record["stage"] as? String else { return [] }
        let prefix = stage + ((record["model"] as? String).map { "/" + $0 } ?? "")
        let step = ["policy_version", "version", "step"].lazy.compactMap { record[$0].flatMap(number) }.first.map { Int64($0) } ?? fallbackStep
        var scalars: [Scalar] = []
        func add(_ value: Any, tag: String) {
            if let number = number(value) {
                scalars.append(Scalar(tag: tag, step: step, value: Float(number)))
            } else if let object = value as? [String: Any] {
                for key in object.keys.sorted() { add(object[key]!, tag: tag + "/" + key) }
            }
        }
        for key in record.keys.sorted() where !placementKeys.contains(key) { add(record[key]!, tag: prefix + "/" + key) }
        return scalars
    }

    /// A metrics value as a number (nil: text, a boolean, null, an object).
    static func number(_ value: Any) -> Double? {
        switch value {
        case is Bool: return nil
        case let v as Double: return v
        case let v as Float: return Double(v)
        case let v as Int: return Double(v)
        case let v as Int64: return Double(v)
        case let v as UInt64: return Double(v)
        case let v as Int32: return Double(v)
        case let v as UInt32: return Double(v)
        default: return nil
        }
    }

    /// `data` framed as one TFRecord: its length (little-endian UInt64), the length's masked CRC-32C, the
    /// data, the data's masked CRC-32C.
    static func tfRecord(_ data: [UInt8]) -> [UInt8] {
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian, Array.init)
        func maskedCRC(_ bytes: [UInt8]) -> [UInt8] {
            var crc = CRC32C()
            crc.update(bytes)
            let masked = ((crc.value >> 15) | (crc.value << 17)) &+ 0xA282_EAD8
            return withUnsafeBytes(of: masked.littleEndian, Array.init)
        }
        return length + maskedCRC(length) + data + maskedCRC(data)
    }

    private let file: FileHandle
    /// Records without a step of their own, counted per stage.
    private var counts: [String: Int64] = [:]
    /// The file written (`events.out.tfevents.SECONDS.HOST.PID`).
    public let path: String

    /// A new event file in `directory` (made where missing), headed by the format's version event.
    public init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let now = Date().timeIntervalSince1970
        path = directory + "/events.out.tfevents.\(Int(now)).\(ProcessInfo.processInfo.hostName).\(getpid())"
        guard FileManager.default.createFile(atPath: path, contents: nil), let file = FileHandle(forWritingAtPath: path) else {
            throw LlamaError.invalidInput("cannot write the TensorBoard log \(path)")
        }
        self.file = file
        var header = Tensorboard_Event()
        header.wallTime = now
        header.fileVersion = "brain.Event:2"
        try append(header)
    }

    /// Appends `record`'s scalars (`scalars(of:)`), as events at `wallTime` (one per step).
    public mutating func write(_ record: [String: Any], wallTime: Double) throws {
        let stage = record["stage"] as? String ?? ""
        counts[stage, default: 0] += 1
        let scalars = TensorBoardLog.scalars(of: record, fallbackStep: counts[stage]!)
        guard let step = scalars.first?.step else { return }
        var event = Tensorboard_Event()
        event.wallTime = wallTime
        event.step = step
        event.summary.value = scalars.map { scalar in
            var value = Tensorboard_Summary.Value()
            value.tag = scalar.tag
            value.simpleValue = scalar.value
            return value
        }
        try append(event)
    }

    private func append(_ event: Tensorboard_Event) throws {
        try file.write(contentsOf: TensorBoardLog.tfRecord(try event.serializedBytes()))
    }
}
