#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A buffer of `Float`s (weights, activations, caches).
public typealias FloatBuffer = AlignedBuffer<Float>

/// A 64-byte-aligned, fixed-size, zero-initialised buffer of plain numbers: the single home of a
/// model's weights (and of other large tensors). It is shared by reference and never copied per sequence.
///
/// Mutation goes through `withUnsafeMutableBufferPointer`; callers that share a buffer across threads
/// must not mutate it while others read (weights are written once at load time).
public final class AlignedBuffer<Element: BitwiseCopyable>: @unchecked Sendable {
    /// Number of elements.
    public let count: Int
    private let base: UnsafeMutablePointer<Element>
    /// The anonymous mapping a large buffer lives in (its start and length), unmapped at deinit.
    private let mapping: (start: UnsafeMutableRawPointer, length: Int)?

    /// Allocates `count` elements, zero-filled. A large buffer (2 MiB and more) is fresh anonymous
    /// memory, zero without being written, so that only the pages written become resident (a KV cache
    /// allocated for the whole context holds the positions its sequence reached; a gradient buffer a
    /// scoring role never fills holds nothing). With `hugePages` it is aligned to, and advised as,
    /// transparent huge pages: streamed reads then cross a page boundary every 2 MiB instead of every
    /// 4 KiB (TLB walks, and the hardware prefetchers stop at page boundaries). A no-op where THP is off.
    public init(count: Int, hugePages: Bool = true) {
        precondition(count >= 0, "AlignedBuffer count must be non-negative")
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Element>.stride
        guard bytes >= AlignedBuffer.hugePageBytes else {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            base = raw.bindMemory(to: Element.self, capacity: max(count, 1))
            mapping = nil
            return
        }
        let alignment = hugePages ? AlignedBuffer.hugePageBytes : 4096
        let length = bytes + alignment
        let mapped = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            fatalError("cannot map \(bytes) bytes of memory (errno \(errno))")
        }
        let start = (Int(bitPattern: mapped) + alignment - 1) / alignment * alignment
        let raw = UnsafeMutableRawPointer(bitPattern: start)!
        #if canImport(Glibc)
        if hugePages { _ = madvise(raw, bytes, MADV_HUGEPAGE) }
        #endif
        base = raw.bindMemory(to: Element.self, capacity: count)
        mapping = (mapped, length)
    }

    deinit {
        if let mapping { munmap(mapping.start, mapping.length) } else { UnsafeMutableRawPointer(base).deallocate() }
    }

    /// Size from which buffers are aligned to, and advised as, transparent huge pages.
    static var hugePageBytes: Int { 2 << 20 }

    /// Lends the contents for reading.
    @inlinable
    public func withUnsafeBufferPointer<R, E: Error>(_ body: (UnsafeBufferPointer<Element>) throws(E) -> R) throws(E) -> R {
        try body(UnsafeBufferPointer(start: baseAddress, count: count))
    }

    /// Lends the contents for writing.
    @inlinable
    public func withUnsafeMutableBufferPointer<R, E: Error>(_ body: (UnsafeMutableBufferPointer<Element>) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableBufferPointer(start: baseAddress, count: count))
    }

    @usableFromInline package var baseAddress: UnsafeMutablePointer<Element> { base }

    /// A copy of `range` as an array (for tests and small tensors).
    public func array(_ range: Range<Int>) -> [Element] {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        return Array(UnsafeBufferPointer<Element>(start: base + range.lowerBound, count: range.count))
    }

    /// A new buffer with the same elements.
    public func copy() -> AlignedBuffer<Element> {
        let other = AlignedBuffer<Element>(count: count)
        other.base.update(from: base, count: count)
        return other
    }

    /// Overwrites every element with `other`'s (of the same count).
    public func update(from other: AlignedBuffer<Element>) {
        precondition(other.count == count, "buffers of different sizes")
        base.update(from: other.base, count: count)
    }

    /// Overwrites `values.count` elements starting at `offset`.
    public func set(_ values: [Element], at offset: Int) {
        precondition(offset >= 0 && offset + values.count <= count)
        values.withUnsafeBufferPointer { src in
            (base + offset).update(from: src.baseAddress!, count: src.count)
        }
    }
}
