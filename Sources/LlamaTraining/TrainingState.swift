import Foundation
import LlamaCore

/// Everything needed to continue training exactly where it stopped: weights, optimizer moments and
/// step, RNG state, data position and scalar heads.
///
/// File layout (little-endian): magic `SRLHFTS1` (8 bytes), uint32 format version, uint32 length `J`
/// of a JSON header, the header, then float32 blobs (the weights in checkpoint layout, then each
/// optimizer group's first and second moments), then a uint32 CRC-32C of everything before it.
/// Written atomically: temporary file, fsync, rename.
public struct TrainingState {
    /// The model being trained.
    public var weights: ModelWeights
    /// The optimizer (its step counts the updates taken).
    public var optimizer: AdamW
    /// Training steps completed.
    public var step: Int
    /// The data-order / sampling RNG.
    public var rng: SeededGenerator
    /// Position in the data stream (examples consumed).
    public var dataPosition: Int
    /// Scalar heads by name (`"reward"`, `"value"`).
    public var heads: [String: ScalarHead]
    /// What defined the run that wrote the state (`TrainerSettings.run`); empty in states written
    /// before it was recorded.
    public var run: [String: String]
    /// LoRA adapters trained on `weights` (then the frozen base; the optimizer's moments are the
    /// adapters'), their settings and values laid out as `LoRALayout` says.
    public var lora: (settings: LoRASettings, values: FloatBuffer)?

    /// The model the state stands for: `weights`, with the adapters merged in when there are any.
    public var mergedWeights: ModelWeights {
        guard let lora, let layout = try? LoRALayout(config: weights.config, settings: lora.settings) else { return weights }
        return layout.merged(lora.values, into: weights)
    }

    /// Format identifiers.
    public static let magic = Array("SRLHFTS1".utf8)
    public static let formatVersion: UInt32 = 1

    /// A state to save.
    public init(weights: ModelWeights, optimizer: AdamW, step: Int, rng: SeededGenerator, dataPosition: Int,
                heads: [String: ScalarHead] = [:], run: [String: String] = [:], lora: (settings: LoRASettings, values: FloatBuffer)? = nil) {
        self.run = run
        self.lora = lora
        self.weights = weights
        self.optimizer = optimizer
        self.step = step
        self.rng = rng
        self.dataPosition = dataPosition
        self.heads = heads
    }

    /// The JSON header.
    struct Header: Codable {
        var config: LlamaConfig
        var step: Int
        var rng: SeededGenerator
        var dataPosition: Int
        var heads: [String: ScalarHead]
        var optimizerSettings: AdamWSettings
        var optimizerStep: Int
        var momentSizes: [Int]
        var weightCount: Int
        /// Optional: absent in states written before it was recorded.
        var run: [String: String]?
        /// Optional: LoRA adapters' settings and element count (their values follow the moments).
        var lora: LoRASettings?
        var adapterCount: Int?
    }

    /// Writes the state atomically to `path`.
    public func write(to path: String) throws {
        let header = Header(config: weights.config, step: step, rng: rng, dataPosition: dataPosition, heads: heads,
                            optimizerSettings: optimizer.settings, optimizerStep: optimizer.step,
                            momentSizes: optimizer.firstMoments.map(\.count), weightCount: weights.storage.count,
                            run: run.isEmpty ? nil : run, lora: lora?.settings, adapterCount: lora?.values.count)
        let json = Array(try JSONEncoder().encode(header))
        var crc = CRC32C()
        let file = try WritableFile(atomicPath: path)
        do {
            func emit(_ raw: UnsafeRawBufferPointer) throws {
                crc.update(raw)
                try file.write(raw)
            }
            var prefix = TrainingState.magic
            withUnsafeBytes(of: TrainingState.formatVersion.littleEndian) { prefix += $0 }
            withUnsafeBytes(of: UInt32(json.count).littleEndian) { prefix += $0 }
            prefix += json
            try prefix.withUnsafeBytes { try emit($0) }
            for buffer in [weights.storage] + optimizer.firstMoments + optimizer.secondMoments + [lora?.values].compactMap({ $0 }) {
                try buffer.withUnsafeBufferPointer { try emit(UnsafeRawBufferPointer($0)) }
            }
            try withUnsafeBytes(of: crc.value.littleEndian) { try file.write($0) }
            try file.commit()
        } catch {
            file.abandon()
            throw error
        }
    }

    /// Whether `path` is a training-state file (it starts with the magic), not a checkpoint.
    public static func isStateFile(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: magic.count)).map(Array.init) == magic
    }

    /// Reads a state, refusing a truncated, oversized or corrupt file with a message that says which.
    public static func read(path: String) throws -> TrainingState {
        let file = try ReadableFile(path: path)
        defer { file.close() }
        func fail(_ reason: String) -> LlamaError { .invalidCheckpoint(path: path, reason: reason) }
        guard file.size >= 16 else { throw fail("truncated: \(file.size) bytes, too short for a training-state header") }
        let prefix = try file.readBytes(at: 0, count: 16, path: path)
        guard Array(prefix[0..<8]) == magic else { throw fail("not a training-state file (bad magic)") }
        let version = prefix[8..<12].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        guard version == formatVersion else { throw fail("training-state format version \(version) is not supported (expected \(formatVersion))") }
        let jsonLength = Int(prefix[12..<16].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) })
        guard 16 + jsonLength + 4 <= file.size else {
            throw fail("truncated: header claims \(jsonLength) bytes, file has \(file.size)")
        }
        let json = try file.readBytes(at: 16, count: jsonLength, path: path)
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(json))
        } catch {
            throw fail("corrupt header: \(error)")
        }
        try header.config.validate()
        let layout = ParameterLayout(config: header.config)
        guard header.weightCount == layout.totalCount else {
            throw fail("header's weight count \(header.weightCount) does not match its config (\(layout.totalCount))")
        }
        // Sizes from the header are checked against the file before any is added up or allocated.
        var momentFloats = 0
        for size in header.momentSizes {
            guard size >= 0, size <= file.size / 4 - momentFloats else {
                throw fail("header claims optimizer moments of \(header.momentSizes.count) groups sized \(header.momentSizes.prefix(8)), "
                           + "more than the file's \(file.size) bytes hold")
            }
            momentFloats += size
        }
        var adapterCount = 0
        if let settings = header.lora {
            let layout: LoRALayout
            do { layout = try LoRALayout(config: header.config, settings: settings) } catch { throw fail("header's LoRA settings: \(error)") }
            guard header.adapterCount == layout.totalCount else {
                throw fail("header's adapter count \(header.adapterCount ?? 0) does not match its LoRA settings (\(layout.totalCount))")
            }
            adapterCount = layout.totalCount
        }
        let floats = header.weightCount + 2 * momentFloats + adapterCount
        let expected = 16 + jsonLength + floats * 4 + 4
        if file.size < expected { throw fail("truncated: expected \(expected) bytes, found \(file.size)") }
        if file.size > expected { throw fail("inconsistent: expected \(expected) bytes, found \(file.size)") }
        let weights = ModelWeights(zerosFor: header.config)
        var cursor = 16 + jsonLength
        try file.readFloats(at: cursor, into: weights.storage, offset: 0, count: header.weightCount, path: path)
        cursor += header.weightCount * 4
        var moments: [FloatBuffer] = []
        for size in header.momentSizes + header.momentSizes {
            let buffer = FloatBuffer(count: size)
            try file.readFloats(at: cursor, into: buffer, offset: 0, count: size, path: path)
            cursor += size * 4
            moments.append(buffer)
        }
        let adapters = header.lora.map { _ in FloatBuffer(count: adapterCount) }
        if let adapters {
            try file.readFloats(at: cursor, into: adapters, offset: 0, count: adapterCount, path: path)
            cursor += adapterCount * 4
        }
        // Verify the checksum over everything before it.
        var crc = CRC32C()
        crc.update(prefix)
        crc.update(json)
        for buffer in [weights.storage] + moments + [adapters].compactMap({ $0 }) {
            buffer.withUnsafeBufferPointer { crc.update(UnsafeRawBufferPointer($0)) }
        }
        let stored = try file.readBytes(at: cursor, count: 4, path: path).enumerated()
            .reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        guard stored == crc.value else {
            throw fail("checksum mismatch (stored \(String(stored, radix: 16)), computed \(String(crc.value, radix: 16))): the file is corrupt")
        }
        let groups = header.momentSizes.count
        let optimizer = AdamW(settings: header.optimizerSettings, step: header.optimizerStep,
                              firstMoments: Array(moments[..<groups]), secondMoments: Array(moments[groups...]))
        return TrainingState(weights: weights, optimizer: optimizer, step: header.step, rng: header.rng,
                             dataPosition: header.dataPosition, heads: header.heads, run: header.run ?? [:],
                             lora: header.lora.flatMap { settings in adapters.map { (settings, $0) } })
    }
}
