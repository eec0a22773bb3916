import Foundation
import Testing
@testable import LlamaCore

/// Large buffers are fresh anonymous memory: zero, and resident only where written.
@Suite struct BufferMemoryTests {
    /// Bytes of `[start, start + length)` resident now, page by page (`mincore`: exact for the range, where
    /// /proc/self/smaps would count a whole mapping, which the kernel may merge with its neighbours).
    static func residentBytes(_ start: UnsafeMutableRawPointer, _ length: Int) -> Int {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var pages = [UInt8](repeating: 0, count: (length + page - 1) / page)
        guard mincore(start, length, &pages) == 0 else { return -1 }
        return pages.reduce(0) { $0 + Int($1 & 1) } * page
    }

    @Test func aLargeBufferIsResidentOnlyWhereWritten() {
        let bytes = 64 << 20
        let buffer = FloatBuffer(count: bytes / 4, hugePages: false)
        let start = UnsafeMutableRawPointer(buffer.baseAddress)
        #expect(BufferMemoryTests.residentBytes(start, bytes) == 0, "a fresh 64 MiB buffer is not resident")
        #expect(buffer.array(0 ..< 1024).allSatisfy { $0 == 0 } && buffer.array(buffer.count - 1024 ..< buffer.count).allSatisfy { $0 == 0 })
        buffer.withUnsafeMutableBufferPointer { b in for i in 0 ..< (1 << 20) / 4 { b[i] = 1 } }
        let written = BufferMemoryTests.residentBytes(start, bytes)
        // (Reading the last floats above faulted in a page or two; where transparent huge pages are on for
        // every mapping, a first touch faults in a whole 2 MiB page.)
        #expect(written >= 1 << 20 && written <= 5 << 20, "1 MiB written: \(written) bytes resident")
        // A KV cache holds the positions its sequence reached, not the whole context.
        let cache = KVCache(config: .llama110M)
        let cacheBytes = cache.keys.count * 4
        #expect(BufferMemoryTests.residentBytes(UnsafeMutableRawPointer(cache.keys.baseAddress), cacheBytes) == 0)
    }

    @Test func smallAndLargeBuffersStartAtZeroAndAligned() {
        for count in [1, 100, 1 << 19, 1 << 21] {
            for huge in [true, false] {
                let buffer = FloatBuffer(count: count, hugePages: huge)
                #expect(Int(bitPattern: buffer.baseAddress) % 64 == 0)
                if huge && count * 4 >= 2 << 20 { #expect(Int(bitPattern: buffer.baseAddress) % (2 << 20) == 0) }
                #expect(buffer.array(0 ..< count).allSatisfy { $0 == 0 })
            }
        }
    }
}
