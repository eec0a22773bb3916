import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The on-disk formats of llama2.c that the core reads.
public enum CheckpointFormat: String, Sendable, Codable {
    /// 7 int32 header (`vocab_size < 0` means a separate classifier), then float32 tensors in
    /// run.c's order, with the two `freq_cis` tables before the classifier.
    case legacy
    /// llama2.c's `version1_export`: 256-byte header (magic "ak42", version 1, 7 int32, shared flag),
    /// then float32 norms first, then the matrices, no RoPE tables.
    case version1
    /// A Hugging Face model directory: `config.json` and safetensors weights (`HuggingFaceCheckpoint`).
    case huggingFace = "hf"
}

/// Reading and writing llama2.c checkpoints.
public enum Checkpoint {
    /// The magic that starts a version-1 (and later) llama2.c file: "ak42" as a little-endian uint32.
    public static let versionedMagic: UInt32 = 0x616B_3432
    static let legacyHeaderBytes = 28
    static let versionedHeaderBytes = 256

    /// Reads a legacy or version-1 checkpoint (detected from the first 4 bytes), or a Hugging Face
    /// model directory. A truncated file, a file with trailing bytes, or an impossible header is
    /// refused with expected and actual sizes.
    public static func read(path: String) throws -> (weights: ModelWeights, format: CheckpointFormat) {
        if HuggingFaceCheckpoint.isModelDirectory(path) {
            return (try HuggingFaceCheckpoint.read(directory: path).weights, .huggingFace)
        }
        let file = try openFile(path)
        defer { file.close() }
        if try isVersioned(file, path: path) {
            return (try readVersioned(file, path: path), .version1)
        }
        return (try readLegacy(file, path: path), .legacy)
    }

    /// The model config of a checkpoint (file or Hugging Face directory), from its header or config.json
    /// alone: no tensor is read. Refuses what `read` refuses in the header.
    public static func readConfig(path: String) throws -> LlamaConfig {
        if HuggingFaceCheckpoint.isModelDirectory(path) {
            return try HuggingFaceConfig(contentsOf: path + "/config.json").llama
        }
        let file = try openFile(path)
        defer { file.close() }
        return try isVersioned(file, path: path) ? versionedConfig(file, path: path) : legacyConfig(file, path: path)
    }

    /// A checkpoint file opened for reading (a directory without config.json is refused).
    private static func openFile(_ path: String) throws -> ReadableFile {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw LlamaError.invalidCheckpoint(path: path, reason: "is a directory without config.json (a Hugging Face model directory has one)")
        }
        return try ReadableFile(path: path)
    }

    /// Whether the file starts with the version-1 magic.
    private static func isVersioned(_ file: ReadableFile, path: String) throws -> Bool {
        guard file.size >= 4 else {
            throw LlamaError.invalidCheckpoint(path: path, reason: "file is \(file.size) bytes, too short for any header")
        }
        return UInt32(bitPattern: try file.readInt32s(at: 0, count: 1, path: path)[0]) == versionedMagic
    }

    private static func checkSize(_ file: ReadableFile, expected: Int, path: String) throws {
        if file.size < expected {
            throw LlamaError.invalidCheckpoint(path: path,
                                     reason: "truncated: expected \(expected) bytes for its header's config, found \(file.size)")
        }
        if file.size > expected {
            throw LlamaError.invalidCheckpoint(path: path,
                                     reason: "inconsistent: expected \(expected) bytes for its header's config, found \(file.size) (\(file.size - expected) extra)")
        }
    }

    private static func config(fromHeader h: [Int32], shared: Bool, path: String) throws -> LlamaConfig {
        let config = LlamaConfig(dim: Int(h[0]), hiddenDim: Int(h[1]), nLayers: Int(h[2]), nHeads: Int(h[3]),
                                 nKVHeads: Int(h[4]), vocabSize: Int(h[5]), seqLen: Int(h[6]), sharedClassifier: shared)
        do {
            try config.validate()
        } catch {
            throw LlamaError.invalidCheckpoint(path: path, reason: "header: \(error)")
        }
        return config
    }

    /// A legacy file's config (7 int32; a negative vocab size marks a separate classifier).
    private static func legacyConfig(_ file: ReadableFile, path: String) throws -> LlamaConfig {
        guard file.size >= legacyHeaderBytes else {
            throw LlamaError.invalidCheckpoint(path: path,
                                     reason: "truncated: expected at least \(legacyHeaderBytes) header bytes, found \(file.size)")
        }
        var h = try file.readInt32s(at: 0, count: 7, path: path)
        let shared = h[5] > 0
        h[5] = h[5].magnitude > Int32.max ? 0 : abs(h[5])
        return try config(fromHeader: h, shared: shared, path: path)
    }

    private static func readLegacy(_ file: ReadableFile, path: String) throws -> ModelWeights {
        let config = try legacyConfig(file, path: path)
        // The size is checked against the file before anything is allocated: a header claiming huge
        // dimensions is refused by the size it implies, not by the allocation failing.
        let layout = ParameterLayout(config: config)
        let expected = legacyHeaderBytes + layout.storedTensors.reduce(0) { $0 + layout.count($1) } * 4
        try checkSize(file, expected: expected, path: path)
        let weights = ModelWeights(zerosFor: config)
        var cursor = legacyHeaderBytes
        for tensor in layout.storedTensors {
            try file.readFloats(at: cursor, into: weights.storage, offset: layout.offset(tensor),
                                count: layout.count(tensor), path: path)
            cursor += layout.count(tensor) * 4
        }
        return weights
    }

    /// Order of tensors in a version-1 file.
    static func versionedOrder(_ config: LlamaConfig) -> [ParameterTensor] {
        var order: [ParameterTensor] = [.rmsAttention, .rmsFFN, .rmsFinal, .tokenEmbedding,
                                        .wq, .wk, .wv, .wo, .w1, .w2, .w3]
        if !config.sharedClassifier { order.append(.classifier) }
        return order
    }

    /// A version-1 file's config (its 256-byte header).
    private static func versionedConfig(_ file: ReadableFile, path: String) throws -> LlamaConfig {
        guard file.size >= versionedHeaderBytes else {
            throw LlamaError.invalidCheckpoint(path: path,
                                     reason: "truncated: expected a \(versionedHeaderBytes)-byte header, found \(file.size) bytes")
        }
        let words = try file.readInt32s(at: 4, count: 8, path: path)
        let version = words[0]
        guard version == 1 else {
            throw LlamaError.invalidCheckpoint(path: path,
                                     reason: "version \(version) is not supported (only llama2.c's float32 version 1 and the legacy format)")
        }
        let flag = try file.readBytes(at: 36, count: 1, path: path)[0]
        guard flag <= 1 else {
            throw LlamaError.invalidCheckpoint(path: path, reason: "header: shared_classifier flag is \(flag), expected 0 or 1")
        }
        return try config(fromHeader: Array(words[1...7]), shared: flag == 1, path: path)
    }

    private static func readVersioned(_ file: ReadableFile, path: String) throws -> ModelWeights {
        let config = try versionedConfig(file, path: path)
        let layout = ParameterLayout(config: config)
        let order = versionedOrder(config)
        let expected = versionedHeaderBytes + order.reduce(0) { $0 + layout.count($1) } * 4
        try checkSize(file, expected: expected, path: path)
        let weights = ModelWeights(zerosFor: config)
        var cursor = versionedHeaderBytes
        for tensor in order {
            try file.readFloats(at: cursor, into: weights.storage, offset: layout.offset(tensor),
                                count: layout.count(tensor), path: path)
            cursor += layout.count(tensor) * 4
        }
        return weights
    }

    /// The legacy header of `config`: 7 int32, vocab size negated for a separate classifier.
    public static func legacyHeader(_ c: LlamaConfig) -> [Int32] {
        [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKVHeads,
         c.sharedClassifier ? c.vocabSize : -c.vocabSize, c.seqLen].map { Int32($0) }
    }

    /// Whether llama2.c's header can describe `config`: it has no RMSNorm epsilon, RoPE theta or RoPE
    /// scaling, and run.c and the reader assume LLaMA2's 1e-5, 10000 and none.
    public static func legacyHolds(_ config: LlamaConfig) -> Bool {
        legacyCannotHold(config) == nil
    }

    /// What of `config` llama2.c's header cannot hold, in words ("rms_norm_eps 1e-06, rope_theta 500000.0"),
    /// or nil where it holds all of it.
    public static func legacyCannotHold(_ config: LlamaConfig) -> String? {
        var parts: [String] = []
        if config.normEps != 1e-5 { parts.append("rms_norm_eps \(config.normEps)") }
        if config.ropeTheta != 10000 { parts.append("rope_theta \(config.ropeTheta)") }
        if let scaling = config.ropeScaling { parts.append("rope_scaling \(scaling.typeName)") }
        if config.attentionBias { parts.append("attention biases") }
        if let size = config.explicitHeadSize { parts.append("head_dim \(size)") }
        if config.qkNorm { parts.append("query/key norms") }
        if !config.layersWithoutRoPE.isEmpty { parts.append("layers without RoPE") }
        if config.activation != .silu { parts.append("GeGLU feed-forwards") }
        if config.embeddingScale != nil { parts.append("a scaled embedding") }
        if config.postNorms { parts.append("norms after attention and feed-forward") }
        if !config.inputNorms { parts.append("blocks without input norms") }
        if config.attentionSoftcap != nil || config.logitSoftcap != nil { parts.append("softcapping") }
        if config.explicitAttentionScale != nil { parts.append("attention scale \(config.attentionScale)") }
        if config.localRoPETheta != nil { parts.append("a local RoPE base") }
        // A window as long as the context never leaves a key out.
        if let window = config.slidingWindow, window < config.seqLen { parts.append("a sliding window of \(window)") }
        return parts.isEmpty ? nil : parts.joined(separator: ", ")
    }

    /// Writes `weights` in the legacy format, atomically (temporary file, fsync, rename). A checkpoint
    /// read from a legacy file writes back byte-identically. A model whose epsilon, theta or RoPE scaling
    /// the header cannot hold (`legacyCannotHold`) is refused rather than silently changed.
    public static func writeLegacy(_ weights: ModelWeights, to path: String) throws {
        if let unheld = legacyCannotHold(weights.config) {
            throw LlamaError.invalidCheckpoint(path: path,
                reason: "llama2.c's format cannot hold \(unheld) (it assumes rms_norm_eps 1e-05, rope_theta 10000 and no RoPE scaling); write a Hugging Face directory instead")
        }
        let file = try WritableFile(atomicPath: path)
        do {
            var header = legacyHeader(weights.config)
            try header.withUnsafeMutableBytes { (raw) in
                try file.write(UnsafeRawBufferPointer(raw))
            }
            for tensor in weights.layout.storedTensors {
                let range = weights.layout.range(tensor)
                try weights.storage.withUnsafeBufferPointer { (buf) in
                    try file.write(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buf[range])))
                }
            }
            try file.commit()
        } catch {
            file.abandon()
            throw error
        }
    }
}

// MARK: - File access (POSIX)

/// A read-only file with positioned reads; all pointer work for checkpoint loading stays here.
package struct ReadableFile {
    let fd: Int32
    package let size: Int
    let path: String

    package init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw LlamaError.io(path: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw LlamaError.io(path: path, reason: "cannot stat: \(reason)")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            Glibc.close(fd)
            throw LlamaError.io(path: path, reason: "is a directory")
        }
        self.fd = fd
        self.size = Int(st.st_size)
        self.path = path
    }

    package func close() { _ = Glibc.close(fd) }

    private func readExactly(_ dst: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) throws {
        var done = 0
        while done < count {
            let n = pread(fd, dst + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw LlamaError.io(path: path, reason: "read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 {
                throw LlamaError.invalidCheckpoint(path: path,
                                         reason: "truncated: expected \(offset + count) bytes, found \(offset + done)")
            }
            done += n
        }
    }

    package func readBytes(at offset: Int, count: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { (raw) in
            try readExactly(raw.baseAddress!, count: count, at: offset, path: path)
        }
        return out
    }

    func readInt32s(at offset: Int, count: Int, path: String) throws -> [Int32] {
        var out = [Int32](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { (raw) in
            try readExactly(raw.baseAddress!, count: count * 4, at: offset, path: path)
        }
        return out.map { Int32(littleEndian: $0) }
    }

    package func readFloats(at offset: Int, into buffer: FloatBuffer, offset dstOffset: Int, count: Int, path: String) throws {
        guard count > 0 else { return }
        try buffer.withUnsafeMutableBufferPointer { (buf) in
            try readExactly(UnsafeMutableRawPointer(buf.baseAddress! + dstOffset), count: count * 4, at: offset, path: path)
        }
    }

    /// The whole file (for small files such as tokenizers).
    package func readAll() throws -> [UInt8] { try readBytes(at: 0, count: size, path: path) }
}

/// A file written under a temporary name and renamed into place on `commit()`.
package final class WritableFile {
    let path: String
    let temporaryPath: String
    private var fd: Int32

    package init(atomicPath path: String) throws {
        self.path = path
        self.temporaryPath = path + ".tmp-\(getpid())"
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw LlamaError.io(path: path, reason: "cannot create: \(String(cString: strerror(errno)))") }
    }

    package func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw LlamaError.io(path: path, reason: "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    package func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { (raw) in try write(raw) }
    }

    package func commit() throws {
        guard fsync(fd) == 0 else { throw LlamaError.io(path: path, reason: "fsync failed: \(String(cString: strerror(errno)))") }
        Glibc.close(fd)
        fd = -1
        guard rename(temporaryPath, path) == 0 else {
            throw LlamaError.io(path: path, reason: "rename failed: \(String(cString: strerror(errno)))")
        }
    }

    package func abandon() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        unlink(temporaryPath)
    }
}
