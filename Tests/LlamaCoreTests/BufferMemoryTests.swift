import Foundation
import Testing
@testable import LlamaCore

/// Large buffers are fresh anonymous memory: zero, and resident only where written.
@Suite struct BufferMemoryTests {
    /// The resident kilobytes of the mapping that holds `address` (from /proc/self/smaps).
    static func residentKilobytes(of address: UnsafeMutableRawPointer) throws -> Int {
        // (A /proc file reports size 0: read it to its end rather than by its size.)
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/smaps"))
        defer { try? handle.close() }
        let text = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        let target = UInt(bitPattern: Int(bitPattern: address))
        var inside = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= target && target < bounds[1]
            } else if inside, fields.first == "Rss:", fields.count > 1, let kb = Int(fields[1]) {
                return kb
            }
        }
        throw CocoaError(.fileReadUnknown)
    }

    @Test func aLargeBufferIsResidentOnlyWhereWritten() throws {
        let buffer = FloatBuffer(count: (64 << 20) / 4, hugePages: false)
        let start = UnsafeMutableRawPointer(buffer.baseAddress)
        #expect(try BufferMemoryTests.residentKilobytes(of: start) < 64, "a fresh 64 MiB buffer is not resident")
        #expect(buffer.array(0 ..< 1024).allSatisfy { $0 == 0 } && buffer.array(buffer.count - 1024 ..< buffer.count).allSatisfy { $0 == 0 })
        buffer.withUnsafeMutableBufferPointer { b in for i in 0 ..< (1 << 20) / 4 { b[i] = 1 } }
        let written = try BufferMemoryTests.residentKilobytes(of: start)
        // (Where transparent huge pages are on for every mapping, the first write faults in a whole 2 MiB page.)
        #expect(written >= 1024 && written <= 2048 + 64, "1 MiB written: \(written) kB resident")
        // A KV cache holds the positions its sequence reached, not the whole context.
        let cache = KVCache(config: .llama110M)
        #expect(try BufferMemoryTests.residentKilobytes(of: UnsafeMutableRawPointer(cache.keys.baseAddress)) < 64)
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
