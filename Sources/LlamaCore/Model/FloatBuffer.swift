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

    /// Allocates `count` elements, zero-filled.
    public init(count: Int) {
        precondition(count >= 0, "AlignedBuffer count must be non-negative")
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Element>.stride
        let huge = bytes >= AlignedBuffer.hugePageBytes
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: huge ? AlignedBuffer.hugePageBytes : 64)
        #if canImport(Glibc)
        // Large buffers (weights, caches) ask for transparent huge pages before the first touch: streamed
        // reads then cross a page boundary every 2 MiB instead of every 4 KiB (TLB walks, and the
        // hardware prefetchers stop at page boundaries). A no-op where THP is off.
        if huge { _ = madvise(raw, bytes, MADV_HUGEPAGE) }
        #endif
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        base = raw.bindMemory(to: Element.self, capacity: max(count, 1))
    }

    deinit { UnsafeMutableRawPointer(base).deallocate() }

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

    /// Overwrites `values.count` elements starting at `offset`.
    public func set(_ values: [Element], at offset: Int) {
        precondition(offset >= 0 && offset + values.count <= count)
        values.withUnsafeBufferPointer { src in
            (base + offset).update(from: src.baseAddress!, count: src.count)
        }
    }
}
