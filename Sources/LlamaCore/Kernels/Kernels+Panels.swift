extension Kernels {
    /// Features per panel: one vector of outputs.
    static let panelWidth = 16

    /// Floats a panel-packed `(n, k)` matrix takes: `ceil(n / 32) * 2` panels of `(k, 16)`.
    static func panelCount(n: Int, k: Int) -> Int { (n + 31) / 32 * 32 * k }

    /// Packs row-major `W (n, k)` into panels: panel `j` holds features `16j ..< 16j+16` as `(k, 16)`,
    /// so that a batched product streams each panel once and never transposes on the fly. Features
    /// past `n` are zero.
    static func packPanels(_ dst: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, n: Int, k: Int) {
        let panels = (n + 31) / 32 * 2
        for j in 0..<panels {
            let panel = dst + j * 16 * k
            for f in 0..<16 {
                let row = j * 16 + f
                if row < n {
                    let src = w + row * k
                    for kk in 0..<k { panel[kk * 16 + f] = src[kk] }
                } else {
                    for kk in 0..<k { panel[kk * 16 + f] = 0 }
                }
            }
        }
    }

    /// `C[b, f] = sum_k X[b, k] W[f, k]` for `b < m` and features `f` in `features` (multiples of 32
    /// except at the end), with `W` panel-packed. `X` is `(m, k)`, `C` is `(m, ldc)`. Tiles of 8 rows
    /// by 32 features keep 16 accumulators in registers; each `X` element is broadcast once per tile.
    static func matmulPanels(_ c: UnsafeMutablePointer<Float>, ldc: Int, _ x: UnsafePointer<Float>, m: Int,
                             _ packed: UnsafePointer<Float>, n: Int, k: Int, features: Range<Int>) {
        var j = features.lowerBound / 16
        let end = features.upperBound
        while j * 16 < end {
            let p0 = packed + j * 16 * k, p1 = p0 + 16 * k
            var b = 0
            while b < m {
                let valid = min(8, m - b)
                // Rows past m reuse row b (their results are not stored).
                let x0 = x + b * k
                let x1 = valid > 1 ? x0 + k : x0, x2 = valid > 2 ? x0 + 2 * k : x0, x3 = valid > 3 ? x0 + 3 * k : x0
                let x4 = valid > 4 ? x0 + 4 * k : x0, x5 = valid > 5 ? x0 + 5 * k : x0
                let x6 = valid > 6 ? x0 + 6 * k : x0, x7 = valid > 7 ? x0 + 7 * k : x0
                var a00 = Vec(), a01 = Vec(), a10 = Vec(), a11 = Vec(), a20 = Vec(), a21 = Vec(), a30 = Vec(), a31 = Vec()
                var a40 = Vec(), a41 = Vec(), a50 = Vec(), a51 = Vec(), a60 = Vec(), a61 = Vec(), a70 = Vec(), a71 = Vec()
                for kk in 0..<k {
                    let v0 = load(p0, kk * 16), v1 = load(p1, kk * 16)
                    var s = Vec(repeating: x0[kk]); a00.addProduct(s, v0); a01.addProduct(s, v1)
                    s = Vec(repeating: x1[kk]); a10.addProduct(s, v0); a11.addProduct(s, v1)
                    s = Vec(repeating: x2[kk]); a20.addProduct(s, v0); a21.addProduct(s, v1)
                    s = Vec(repeating: x3[kk]); a30.addProduct(s, v0); a31.addProduct(s, v1)
                    s = Vec(repeating: x4[kk]); a40.addProduct(s, v0); a41.addProduct(s, v1)
                    s = Vec(repeating: x5[kk]); a50.addProduct(s, v0); a51.addProduct(s, v1)
                    s = Vec(repeating: x6[kk]); a60.addProduct(s, v0); a61.addProduct(s, v1)
                    s = Vec(repeating: x7[kk]); a70.addProduct(s, v0); a71.addProduct(s, v1)
                }
                let f0 = j * 16
                let width = min(32, end - f0)
                @inline(__always) func put(_ row: Int, _ lo: Vec, _ hi: Vec) {
                    guard row < valid else { return }
                    let dst = c + (b + row) * ldc + f0
                    if width == 32 {
                        store(lo, dst, 0)
                        store(hi, dst, 16)
                    } else {
                        for f in 0..<width { dst[f] = f < 16 ? lo[f] : hi[f - 16] }
                    }
                }
                put(0, a00, a01); put(1, a10, a11); put(2, a20, a21); put(3, a30, a31)
                put(4, a40, a41); put(5, a50, a51); put(6, a60, a61); put(7, a70, a71)
                b += 8
            }
            j += 2
        }
    }
}
