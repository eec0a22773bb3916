import Foundation
import LlamaCore
import Wire

/// Why a weight transfer was refused or failed. Each case names the version or tensor at fault.
public enum WeightSyncError: Error, Equatable, Sendable, CustomStringConvertible {
    case wrongVersion(requested: UInt64, serving: UInt64)
    case badRange(tensor: Int, offset: UInt64, length: UInt32)
    case layoutMismatch(String)
    case tensorChecksum(name: String)
    case incomplete(missingBytes: Int)

    public var description: String {
        switch self {
        case let .wrongVersion(requested, serving): return "policy version \(requested) requested, serving \(serving)"
        case let .badRange(tensor, offset, length): return "chunk of tensor \(tensor) at \(offset)+\(length) is out of range"
        case let .layoutMismatch(reason): return "announced weights do not fit this model: \(reason)"
        case let .tensorChecksum(name): return "tensor \(name) failed its checksum after transfer"
        case let .incomplete(missing): return "transfer incomplete: \(missing) bytes missing"
        }
    }
}

/// The learner's side: one frozen snapshot of the weights for one policy version, announced with a
/// CRC-32C per tensor and served in chunks to whoever asks for that version (and only that version).
public struct WeightPublisher: Sendable {
    /// The version served.
    public let policyVersion: UInt64
    /// The announcement consumers fetch against.
    public let announcement: WeightAnnouncement
    private let ranges: [Range<Int>]
    /// The snapshot, cut on the announced grid: `chunks[tensor][k]` holds bytes `k * chunkBytes ..<`
    /// of the tensor. Served as they are (arrays share storage), so a chunk is copied once per
    /// version, not once per request.
    private let chunks: [[[UInt8]]]
    /// CRC-32C of every chunk of the announced grid, by tensor then chunk index: computed once per
    /// version, not once per consumer.
    private let chunkChecksums: [[UInt32]]
    private let chunkBytes: Int

    /// Snapshots `weights` (copied: training goes on while consumers pull) as `policyVersion`.
    public init(weights: ModelWeights, policyVersion: UInt64, chunkBytes: Int = 1 << 20, source: String = "") {
        self.init(tensors: weights.tensorSet, policyVersion: policyVersion, chunkBytes: chunkBytes, source: source)
    }

    /// Snapshots `tensors` (copied) as `policyVersion`; with `lora`, the tensors are adapters on that base.
    public init(tensors: TensorSet, policyVersion: UInt64, chunkBytes: Int = 1 << 20, source: String = "",
                lora: WeightAnnouncement.Adapters? = nil) {
        precondition(chunkBytes > 0 && chunkBytes % 4 == 0, "chunks hold whole float32 elements")
        self.policyVersion = policyVersion
        let ranges = tensors.entries.map(\.range)
        self.ranges = ranges
        // Each chunk's bytes and checksum once per version; a tensor's checksum is combined from its chunks'.
        let chunkElements = chunkBytes / 4
        let chunks = ranges.map { range in
            stride(from: range.lowerBound, to: range.upperBound, by: chunkElements).map {
                tensors.bytes(of: $0 ..< min(range.upperBound, $0 + chunkElements))
            }
        }
        self.chunks = chunks
        let chunkLists = chunks.map { $0.map { CRC32C.checksum($0) } }
        let announced = zip(tensors.entries, chunkLists).map { entry, chunks in
            let range = entry.range
            return WeightAnnouncement.Tensor(
                name: entry.name, shape: entry.shape, byteLength: UInt64(range.count * 4),
                crc32c: chunks.enumerated().dropFirst().reduce(chunks.first ?? CRC32C().value) { crc, chunk in
                    let length = min(chunkElements, range.count - chunk.offset * chunkElements) * 4
                    return CRC32C.combine(crc, chunk.element, lengthOfB: length)
                })
        }
        var announcement = WeightAnnouncement(policyVersion: policyVersion, totalBytes: announced.reduce(0) { $0 + $1.byteLength },
                                              chunkBytes: chunkBytes, tensors: announced, source: source)
        announcement.lora = lora
        self.announcement = announcement
        self.chunkBytes = chunkBytes
        chunkChecksums = chunkLists
    }

    /// The precomputed checksum of a chunk on the announced grid (nil for any other range).
    public func checksum(of request: Rlhf_V1_WeightChunkRequest) -> UInt32? {
        let index = Int(request.tensorIndex)
        // Checked before any conversion: the request comes off the network.
        guard index < chunkChecksums.count, request.offset < UInt64(ranges[index].count * 4), request.offset % UInt64(chunkBytes) == 0 else {
            return nil
        }
        let chunk = Int(request.offset) / chunkBytes
        let expected = min(chunkBytes, ranges[index].count * 4 - chunk * chunkBytes)
        guard chunk < chunkChecksums[index].count, Int(request.length) == expected else { return nil }
        return chunkChecksums[index][chunk]
    }

    /// The bytes of one chunk, or a refusal for another version or an out-of-range request.
    public func chunk(_ request: Rlhf_V1_WeightChunkRequest) throws(WeightSyncError) -> [UInt8] {
        guard request.policyVersion == policyVersion else {
            throw .wrongVersion(requested: request.policyVersion, serving: policyVersion)
        }
        let index = Int(request.tensorIndex)
        guard index < ranges.count else { throw .badRange(tensor: index, offset: request.offset, length: request.length) }
        let bytes = UInt64(ranges[index].count * 4)
        guard request.offset < bytes || (bytes == 0 && request.offset == 0),
              request.offset + UInt64(request.length) <= bytes, request.length > 0 || bytes == 0 else {
            throw .badRange(tensor: index, offset: request.offset, length: request.length)
        }
        let first = Int(request.offset) / chunkBytes, within = Int(request.offset) % chunkBytes
        if within == 0 && first < chunks[index].count && chunks[index][first].count == Int(request.length) {
            return chunks[index][first]
        }
        // Off the announced grid: gather from the chunks it overlaps.
        var out: [UInt8] = []
        out.reserveCapacity(Int(request.length))
        var position = Int(request.offset), remaining = Int(request.length)
        while remaining > 0 {
            let chunk = chunks[index][position / chunkBytes], start = position % chunkBytes
            let take = min(remaining, chunk.count - start)
            out += chunk[start ..< start + take]
            position += take
            remaining -= take
        }
        return out
    }
}

/// A consumer's side: fetches an announced version chunk by chunk into a fresh buffer, verifies every
/// tensor's checksum, and only then hands over complete tensors (the caller swaps them in at once).
public struct WeightAssembler: Sendable {
    public let announcement: WeightAnnouncement
    private let storage: FloatBuffer
    private let ranges: [Range<Int>]
    /// Chunk requests not yet sent, in order.
    private var pending: [Rlhf_V1_WeightChunkRequest]
    private var received = 0
    /// Per tensor: (offset, length, CRC-32C) of each chunk received with a verified checksum.
    private var chunkChecksums: [[(offset: UInt64, length: Int, crc: UInt32?)]]

    /// Prepares to receive `announcement` for a model of `config` (whole weights); refuses an
    /// announcement whose tensors do not match the config's layout.
    public init(announcement: WeightAnnouncement, config: LlamaConfig) throws(WeightSyncError) {
        try self.init(announcement: announcement, into: ModelWeights(zerosFor: config).tensorSet)
    }

    /// Prepares to receive `announcement` into `target` (a fresh buffer, filled in place); refuses an
    /// announcement whose tensors are not `target`'s, by name and size, in order.
    public init(announcement: WeightAnnouncement, into target: TensorSet) throws(WeightSyncError) {
        let tensors = target.entries
        guard announcement.tensors.count == tensors.count else {
            throw .layoutMismatch("\(announcement.tensors.count) tensors announced, the model has \(tensors.count)")
        }
        for (t, a) in zip(tensors, announcement.tensors) where a.name != t.name || a.byteLength != UInt64(t.range.count * 4) {
            throw .layoutMismatch("tensor \(a.name) (\(a.byteLength) bytes) where \(t.name) (\(t.range.count * 4) bytes) was expected")
        }
        self.announcement = announcement
        storage = target.storage
        ranges = tensors.map(\.range)
        let chunk = UInt64(max(1, announcement.chunkBytes))
        var requests: [Rlhf_V1_WeightChunkRequest] = []
        for (i, a) in announcement.tensors.enumerated() {
            var offset: UInt64 = 0
            while offset < a.byteLength {
                var r = Rlhf_V1_WeightChunkRequest()
                r.policyVersion = announcement.policyVersion
                r.tensorIndex = UInt32(i)
                r.offset = offset
                r.length = UInt32(min(chunk, a.byteLength - offset))
                requests.append(r)
                offset += chunk
            }
        }
        pending = requests.reversed()
        chunkChecksums = Array(repeating: [], count: tensors.count)
    }

    /// The next chunk request to send, if any remain.
    public mutating func nextRequest() -> Rlhf_V1_WeightChunkRequest? { pending.popLast() }

    /// Stores a chunk's bytes; `crc32c`, when given, must be the bytes' verified checksum (the wire
    /// checked it), and lets `finish()` verify the tensor by combining checksums instead of re-reading it.
    public mutating func receive(tensorIndex: UInt32, offset: UInt64, bytes: [UInt8], crc32c: UInt32? = nil) throws(WeightSyncError) {
        let index = Int(tensorIndex)
        // Overflow-free: the offset comes off the network.
        guard index < ranges.count, offset <= UInt64(ranges[index].count * 4),
              UInt64(bytes.count) <= UInt64(ranges[index].count * 4) - offset else {
            throw .badRange(tensor: index, offset: offset, length: UInt32(clamping: bytes.count))
        }
        let start = ranges[index].lowerBound * 4 + Int(offset)
        storage.withUnsafeMutableBufferPointer { buf in
            UnsafeMutableRawBufferPointer(buf).baseAddress!.advanced(by: start)
                .copyMemory(from: bytes.withUnsafeBytes { $0.baseAddress! }, byteCount: bytes.count)
        }
        received += bytes.count
        chunkChecksums[index].append((offset, bytes.count, crc32c))
    }

    /// A tensor's checksum: combined from its chunks' verified checksums when they tile it exactly,
    /// else computed from the bytes.
    private func tensorChecksum(_ index: Int, _ range: Range<Int>) -> UInt32 {
        let chunks = chunkChecksums[index].sorted { $0.offset < $1.offset }
        var combined: UInt32 = 0, covered: UInt64 = 0, usable = true
        for chunk in chunks {
            guard chunk.offset == covered, let crc = chunk.crc else { usable = false; break }
            combined = covered == 0 ? crc : CRC32C.combine(combined, crc, lengthOfB: chunk.length)
            covered += UInt64(chunk.length)
        }
        if usable && covered == UInt64(range.count * 4) && covered > 0 { return combined }
        return storage.withUnsafeBufferPointer { buf in
            var c = CRC32C()
            c.update(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buf[range])))
            return c.value
        }
    }

    /// Whether every byte has arrived.
    public var isComplete: Bool { UInt64(received) >= announcement.totalBytes }

    /// The verified buffer: every tensor's CRC-32C checked.
    public func finish() throws(WeightSyncError) -> FloatBuffer {
        guard isComplete else { throw .incomplete(missingBytes: Int(announcement.totalBytes) - received) }
        for (index, (a, range)) in zip(announcement.tensors, ranges).enumerated() {
            guard tensorChecksum(index, range) == a.crc32c else { throw .tensorChecksum(name: a.name) }
        }
        return storage
    }
}
