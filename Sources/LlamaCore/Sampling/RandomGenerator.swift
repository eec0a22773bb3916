/// A seeded pseudo-random generator (xoshiro256**, seeded through SplitMix64) whose stream depends
/// only on the seed: the same seed gives the same numbers on every machine and build.
public struct SeededGenerator: RandomNumberGenerator, Sendable, Codable, Equatable {
    /// The 256-bit state; saved and restored by training checkpoints.
    public private(set) var state: (UInt64, UInt64, UInt64, UInt64)

    /// Seeds the state from `seed` with SplitMix64 (so nearby seeds give unrelated streams).
    public init(seed: UInt64) {
        var s = seed
        func splitMix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitMix(&s), splitMix(&s), splitMix(&s), splitMix(&s))
    }

    /// A generator for stream `stream` of `seed`: used to give each sequence of a batch its own
    /// stream, so that a sequence's sample does not depend on what else is in the batch.
    public init(seed: UInt64, stream: UInt64) {
        self.init(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03) &+ stream)
    }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    /// A uniform float in [0, 1) with 24 random bits.
    public mutating func nextUnitFloat() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// A standard normal sample (Box-Muller in Double, so the value is the same on every machine
    /// whose libm rounds log/cos/sin correctly, as glibc's do).
    public mutating func nextGaussian() -> Double {
        let u1 = (Double(next() >> 11) + 1) * (1.0 / 9_007_199_254_740_993.0)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public static func == (a: SeededGenerator, b: SeededGenerator) -> Bool {
        a.state.0 == b.state.0 && a.state.1 == b.state.1 && a.state.2 == b.state.2 && a.state.3 == b.state.3
    }

    enum CodingKeys: CodingKey { case state }

    /// The state is coded as four hexadecimal strings: JSON numbers above 2^53 are not exact everywhere.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let words = try c.decode([String].self, forKey: .state).compactMap { UInt64($0, radix: 16) }
        guard words.count == 4 else {
            throw DecodingError.dataCorruptedError(forKey: .state, in: c, debugDescription: "expected 4 hexadecimal words")
        }
        state = (words[0], words[1], words[2], words[3])
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode([state.0, state.1, state.2, state.3].map { String($0, radix: 16) }, forKey: .state)
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#elseif canImport(Darwin)
import Darwin
@inline(__always) func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
