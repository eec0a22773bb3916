#if canImport(Glibc)
import Glibc
#endif

extension Kernels {
    /// `exp(x)` lane-wise, to about 2 ulp over the float range (Cody-Waite reduction by ln 2 and a
    /// degree-6 polynomial). Plain IEEE arithmetic with fused multiply-adds, so every machine gets the
    /// same bits; inputs below -87.3 give 0.
    ///
    /// Transparent, not `@inline(__always)`: the optimizer measures this body before its SIMD16
    /// operations become vector instructions, finds it large and declines an always-inline request,
    /// which left every caller (SwiGLU, attention, the sampler's softmax) calling it out of line on
    /// four 128-bit parts, at a third of the speed. Callers in other modules still get a call (their
    /// optimizer does not inline it): they use the loops here (`swiglu`, `swigluBackward`,
    /// `expShifted`, `logSumExp`) rather than `exp` itself.
    @_transparent
    package static func exp(_ x: Vec) -> Vec {
        // 1.5 * 2^23: adding it rounds to the nearest integer (ties to even) and leaves that integer
        // in the low mantissa bits.
        let magic = Vec(repeating: 12_582_912)
        let clamped = pointwiseMin(pointwiseMax(x, Vec(repeating: -87.33654)), Vec(repeating: 88.72283))
        let shifted = clamped * Vec(repeating: 1.442695041) + magic
        let n = shifted - magic
        var r = clamped
        r.addProduct(n, Vec(repeating: -0.693359375))
        r.addProduct(n, Vec(repeating: 2.12194440e-4))
        var p = Vec(repeating: 1.9875691500e-4)
        p = p * r + Vec(repeating: 1.3981999507e-3)
        p = p * r + Vec(repeating: 8.3334519073e-3)
        p = p * r + Vec(repeating: 4.1665795894e-2)
        p = p * r + Vec(repeating: 1.6666665459e-1)
        p = p * r + Vec(repeating: 5.0000001201e-1)
        let r2 = r * r
        let result = p * r2 + r + Vec(repeating: 1)
        let integer = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
        let scale = unsafeBitCast((integer &+ 127) &<< 23, to: Vec.self)
        return (result * scale).replacing(with: 0, where: x .< Vec(repeating: -87.33654))
    }

    /// Scalar `exp` through the same polynomial (so scalar tails match the vector body).
    @inline(__always)
    @inlinable package static func exp(_ x: Float) -> Float { exp(Vec(repeating: x))[0] }

    /// Largest of `n` elements (`-inf` for none; NaNs are passed over).
    @inline(__always)
    @inlinable package static func maximum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m = Vec(repeating: -.infinity)
        var i = 0
        // A compare and a blend per vector: the standard library's `pointwiseMax` follows IEEE
        // maxNum's NaN rules lane by lane, which compiles to a scalar loop (it took three quarters of
        // the sampler's time).
        while i + 16 <= n {
            let v = load(x, i)
            m = m.replacing(with: v, where: v .> m)
            i += 16
        }
        var result = m.max()
        while i < n { result = Swift.max(result, x[i]); i += 1 }
        return result
    }

    /// `log sum_j exp(x[j])` of `n` elements: the largest shifted out, the exponentials summed in 16
    /// float lanes (not stored), the tail's in double.
    package static func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
        let m = maximum(x, n)
        let shift = Vec(repeating: m)
        var lanes = Vec()
        var i = 0
        while i + 16 <= n {
            lanes += exp(load(x, i) - shift)
            i += 16
        }
        var sum = Double(horizontalSum(lanes))
        while i < n { sum += Double(exp(x[i] - m)); i += 1 }
        return Double(m) + log(sum)
    }

    /// `out[i] = exp(scale * (x[i] - shift))` and returns the sum; `out` may alias `x`.
    @inline(__always)
    @inlinable package static func expShifted(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int,
                           shift: Float, scale: Float) -> Float {
        let s = Vec(repeating: scale), m = Vec(repeating: shift)
        var sum = Vec()
        var i = 0
        while i + 16 <= n {
            let e = exp((load(x, i) - m) * s)
            store(e, out, i)
            sum += e
            i += 16
        }
        if i < n {
            // The tail goes through one vector too, padded lanes at -inf (exp gives 0).
            var tail = Vec(repeating: -.infinity)
            for j in 0..<(n - i) { tail[j] = x[i + j] }
            let e = exp((tail - m) * s)
            for j in 0..<(n - i) { out[i + j] = e[j] }
            sum += e
        }
        return horizontalSum(sum)
    }
}
