/// FNV-1a over a sequence of values, each folded in as one unit: a hash that is the same on every
/// machine and run (Swift's `Hasher` is seeded per process), for fixed data splits.
public func stableHash<S: Sequence>(_ values: S) -> UInt64 where S.Element: FixedWidthInteger & UnsignedInteger {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for value in values {
        hash ^= UInt64(value)
        hash &*= 0x100_0000_01B3
    }
    return hash
}

extension SeededGenerator {
    /// Shuffles `array` in place (Fisher-Yates from the end, index `next() % (i + 1)`): the same order
    /// for the same generator state on every machine, unlike `shuffle(using:)`, whose algorithm the
    /// standard library does not promise.
    public mutating func shuffle<T>(_ array: inout [T]) {
        for i in stride(from: array.count - 1, to: 0, by: -1) {
            array.swapAt(i, Int(next() % UInt64(i + 1)))
        }
    }
}
