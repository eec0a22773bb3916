import CChecksum

/// CRC-32C (Castagnoli), the checksum of training-state files and of the wire's frames. With the CPU's
/// crc32 instruction (SSE4.2) when it has one (measured here: about 4x the table code), otherwise
/// slicing by 8: eight table lookups per 8 bytes.
public struct CRC32C: Sendable {
    /// Whether this CPU computes CRC-32C in hardware.
    public static let hardware = rlhf_crc32c_hardware() == 1

    /// `tables[k][b]`: the CRC contribution of byte `b` followed by `k` zero bytes.
    private static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k][i] = (t[k - 1][i] >> 8) ^ t[0][Int(t[k - 1][i] & 0xFF)] }
        }
        return t
    }()
    private static let flat: [UInt32] = tables.flatMap { $0 }

    /// The running register (already inverted).
    private var state: UInt32 = 0xFFFF_FFFF

    /// A fresh checksum.
    public init() {}

    /// Feeds bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        if CRC32C.hardware {
            state = rlhf_crc32c_update(state, base, bytes.count)
            return
        }
        updateWithTables(base, bytes.count)
    }

    /// The portable path (also what the tests compare the hardware path against).
    package mutating func updateWithTables(_ base: UnsafeRawPointer, _ n: Int) {
        var c = state
        CRC32C.flat.withUnsafeBufferPointer { t in
            var i = 0
            while i + 8 <= n {
                let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self).littleEndian
                let lo = UInt32(truncatingIfNeeded: word) ^ c, hi = UInt32(truncatingIfNeeded: word >> 32)
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                c = t[Int((c ^ UInt32(base.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                i += 1
            }
        }
        state = c
    }

    /// Feeds an array's bytes.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The checksum of everything fed so far.
    public var value: UInt32 { state ^ 0xFFFF_FFFF }

    /// The checksum of `A + B` from the checksums of `A` and `B` and the length of `B`, without the
    /// bytes (zlib's crc32_combine method: multiply by x^(8 len) in GF(2) with squared operator
    /// matrices). Lets a receiver verify a whole tensor from the checksums of its chunks.
    public static func combine(_ crcA: UInt32, _ crcB: UInt32, lengthOfB: Int) -> UInt32 {
        guard lengthOfB > 0 else { return crcA }
        func times(_ matrix: [UInt32], _ vector: UInt32) -> UInt32 {
            var sum: UInt32 = 0, v = vector, i = 0
            while v != 0 {
                if v & 1 != 0 { sum ^= matrix[i] }
                v >>= 1
                i += 1
            }
            return sum
        }
        func square(_ matrix: [UInt32]) -> [UInt32] { (0..<32).map { times(matrix, matrix[$0]) } }
        // The operator for one zero bit, then for 2 and 4.
        var odd = [UInt32](repeating: 0, count: 32)
        odd[0] = 0x82F6_3B78
        var row: UInt32 = 1
        for n in 1..<32 { odd[n] = row; row <<= 1 }
        var even = square(odd)
        odd = square(even)
        var crc = crcA, remaining = lengthOfB
        while true {
            even = square(odd)
            if remaining & 1 != 0 { crc = times(even, crc) }
            remaining >>= 1
            if remaining == 0 { break }
            odd = square(even)
            if remaining & 1 != 0 { crc = times(odd, crc) }
            remaining >>= 1
            if remaining == 0 { break }
        }
        return crc ^ crcB
    }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }
}
