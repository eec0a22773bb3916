import CKernels

extension Kernels {
    /// Panels a packed `(n, k)` matrix has: one per 16 features, plus three zero panels so that a tile
    /// of four may start at any panel (threads split work at 16-feature boundaries, for balance).
    package static func panels(n: Int) -> Int { (n + 15) / 16 + 3 }

    /// Floats a panel-packed `(n, k)` matrix takes.
    package static func panelCount(n: Int, k: Int) -> Int { panels(n: n) * 16 * k }

    /// Packs row-major `W (n, k)` into panels: panel `j` holds features `16j ..< 16j+16` as `(k, 16)`,
    /// so that a batched product streams each panel once and never transposes on the fly. Features
    /// past `n` are zero.
    package static func packPanels(_ dst: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, n: Int, k: Int) {
        for j in 0..<panels(n: n) {
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

    /// `C[b, f] = sum_k X[b, k] W[f, k]` for `b < m` and features `f` in `features` (a range whose
    /// bounds are multiples of 16, except the end at `n`), with `W` panel-packed. `X` is `(m, k)`, `C`
    /// is `(m, ldc)`. Tiles of 4 rows by 64 features keep 16 accumulators in registers: per step of k,
    /// 4 panel loads and 4 broadcasts feed 16 fused multiply-adds. A range's last 1-3 panels (a thread's
    /// share of 288 features ends in one) go through `matmulPanel` one by one, rather than a tile
    /// that multiplies zero panels. 5 to 64 rows (a batched decode) take `matmulPanelsInterleaved`'s
    /// turns over k.
    /// With `accumulate`, adds to `C` instead of overwriting it.
    package static func matmulPanels(_ c: UnsafeMutablePointer<Float>, ldc: Int, _ x: UnsafePointer<Float>, m: Int,
                             _ packed: UnsafePointer<Float>, n: Int, k: Int, features: Range<Int>,
                             accumulate: Bool = false) {
        var j = features.lowerBound / 16
        let end = features.upperBound
        while j * 16 < end {
            let p0 = packed + j * 16 * k, p1 = p0 + 16 * k, p2 = p1 + 16 * k, p3 = p2 + 16 * k
            let f0 = j * 16
            let width = min(64, end - f0)
            if width <= 48 {
                for panel in 0..<(width + 15) / 16 {
                    let f = f0 + panel * 16
                    matmulPanel(c + f, ldc: ldc, x, m: m, packed + (j + panel) * 16 * k, k: k,
                                width: min(16, end - f), accumulate: accumulate)
                }
                break
            }
            if m > 4 && m <= 64 {
                matmulPanelsInterleaved(c + f0, ldc: ldc, x, m: m, p0, k: k, width: width, accumulate: accumulate)
                j += 4
                continue
            }
            // More rows (a long prompt's prefill): with several tiles, the first streams the four panels
            // from memory and the others reread them from cache; those others also fetch the next four
            // panels (64 k floats: 4k cache lines) ahead, `linesPerStep` lines per step of k, so that
            // memory and arithmetic overlap.
            let tiles = (m + 3) / 4
            let linesPerStep = tiles >= 3 ? 2 : 4
            let nextPanels = p0 + 64 * k
            var b = 0
            while b < m {
                let valid = min(4, m - b)
                if valid == 1 {
                    // A lone row (batch-1 decode, a batch's last row): 4 accumulators instead of a tile
                    // whose other 12 multiply rows that are not stored. Each sum runs over k in the same
                    // order, so a row gets the same bits in either.
                    matmulPanelsRow(c + b * ldc + f0, x + b * k, p0, p1, p2, p3, k: k, width: width, accumulate: accumulate)
                    break
                }
                // Rows past m reuse row b (their results are not stored).
                let x0 = x + b * k
                let x1 = valid > 1 ? x0 + k : x0, x2 = valid > 2 ? x0 + 2 * k : x0, x3 = valid > 3 ? x0 + 3 * k : x0
                var tile = PanelTile()
                let firstLine = (b / 4 - 1) * k * linesPerStep
                let prefetching = b > 0 && firstLine < 4 * k
                let ahead = nextPanels + max(0, firstLine) * 16
                for kk in 0..<k {
                    if prefetching {
                        for line in 0..<linesPerStep { rlhf_prefetch(ahead + (kk * linesPerStep + line) * 16) }
                    }
                    tile.step(kk, x0, x1, x2, x3, p0, p1, p2, p3)
                }
                tile.store(c + b * ldc + f0, ldc: ldc, rows: valid, width: width, accumulate: accumulate)
                b += 4
            }
            j += 4
        }
    }

    /// Steps of k a tile of `matmulPanelsInterleaved` takes before the next tile's turn.
    static let interleavedSteps = 16
    /// How far ahead (in chunks of `interleavedSteps`) the tiles after the first fetch the panels.
    static let interleavedPrefetchChunks = 2

    /// `matmulPanels` for the four panels at `p0` (features `0 ..< width` of `c`) and 5 to 64 rows: the
    /// rows' tiles of 4 take turns over k in chunks of `interleavedSteps`, each keeping its 16 sums in
    /// `spill` between turns (floats stored and reloaded unchanged, so every sum still runs over k in
    /// order and gets the same bits as in one pass). The first tile of a chunk reads the panels' lines
    /// from memory, the others from L1, and those others also fetch the lines two chunks ahead: the
    /// panels stream in all the time instead of once per pass of the first tile (a batched decode of
    /// the 110M shape read its weights at 18 GB/s with one pass per tile, 24-25 GB/s so, on an Intel
    /// Xeon whose read probe gives 26-31 on 2 threads).
    static func matmulPanelsInterleaved(_ c: UnsafeMutablePointer<Float>, ldc: Int, _ x: UnsafePointer<Float>, m: Int,
                                        _ p0: UnsafePointer<Float>, k: Int, width: Int, accumulate: Bool) {
        let p1 = p0 + 16 * k, p2 = p1 + 16 * k, p3 = p2 + 16 * k
        let tiles = (m + 3) / 4
        let chunk = interleavedSteps
        // Tiles 1 ... fetching share the lines ahead, step by step.
        let fetching = min(3, tiles - 1)
        let distance = interleavedPrefetchChunks * chunk
        withUnsafeTemporaryAllocation(of: PanelTile.self, capacity: tiles) { spill in
            let spill = spill.baseAddress!
            var k0 = 0
            while k0 < k {
                let k1 = min(k, k0 + chunk)
                for t in 0..<tiles {
                    let b = t * 4
                    let valid = min(4, m - b)
                    // Rows past m reuse row b (their results are not stored).
                    let x0 = x + b * k
                    let x1 = valid > 1 ? x0 + k : x0, x2 = valid > 2 ? x0 + 2 * k : x0, x3 = valid > 3 ? x0 + 3 * k : x0
                    var tile = k0 > 0 ? spill[t] : PanelTile()
                    // Tile t fetches at steps k0 + t - 1, k0 + t - 1 + fetching, ...: a compare per step,
                    // not a `%` (which compiled to a division per step).
                    var nextFetch = t > 0 && t <= fetching ? k0 + t - 1 : k1
                    for kk in k0..<k1 {
                        if kk == nextFetch {
                            if kk + distance < k {
                                let ahead = kk * 16 + distance * 16
                                rlhf_prefetch(p0 + ahead); rlhf_prefetch(p1 + ahead)
                                rlhf_prefetch(p2 + ahead); rlhf_prefetch(p3 + ahead)
                            }
                            nextFetch += fetching
                        }
                        tile.step(kk, x0, x1, x2, x3, p0, p1, p2, p3)
                    }
                    spill[t] = tile
                }
                k0 = k1
            }
            for t in 0..<tiles {
                spill[t].store(c + 4 * t * ldc, ldc: ldc, rows: min(4, m - 4 * t), width: width, accumulate: accumulate)
            }
        }
    }

    /// The 16 sums of a tile of 4 rows by 4 panels (`a<row><panel>`, 16 features each).
    struct PanelTile {
        var a00 = Vec(), a01 = Vec(), a02 = Vec(), a03 = Vec(), a10 = Vec(), a11 = Vec(), a12 = Vec(), a13 = Vec()
        var a20 = Vec(), a21 = Vec(), a22 = Vec(), a23 = Vec(), a30 = Vec(), a31 = Vec(), a32 = Vec(), a33 = Vec()

        /// Adds step `kk` of the sums: 4 panel loads and 4 broadcasts feed 16 fused multiply-adds.
        @inline(__always)
        mutating func step(_ kk: Int, _ x0: UnsafePointer<Float>, _ x1: UnsafePointer<Float>, _ x2: UnsafePointer<Float>,
                           _ x3: UnsafePointer<Float>, _ p0: UnsafePointer<Float>, _ p1: UnsafePointer<Float>,
                           _ p2: UnsafePointer<Float>, _ p3: UnsafePointer<Float>) {
            let o = kk * 16
            let v0 = load(p0, o), v1 = load(p1, o), v2 = load(p2, o), v3 = load(p3, o)
            var s = Vec(repeating: x0[kk])
            a00.addProduct(s, v0); a01.addProduct(s, v1); a02.addProduct(s, v2); a03.addProduct(s, v3)
            s = Vec(repeating: x1[kk])
            a10.addProduct(s, v0); a11.addProduct(s, v1); a12.addProduct(s, v2); a13.addProduct(s, v3)
            s = Vec(repeating: x2[kk])
            a20.addProduct(s, v0); a21.addProduct(s, v1); a22.addProduct(s, v2); a23.addProduct(s, v3)
            s = Vec(repeating: x3[kk])
            a30.addProduct(s, v0); a31.addProduct(s, v1); a32.addProduct(s, v2); a33.addProduct(s, v3)
        }

        /// Writes (or with `accumulate` adds) the first `rows` rows' first `width` (49 to 64) features to
        /// `dst (rows, ldc)`.
        @inline(__always)
        func store(_ dst: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, width: Int, accumulate: Bool) {
            storeFeatures(dst, a00, a01, a02, a03, width: width, accumulate: accumulate)
            if rows > 1 { storeFeatures(dst + ldc, a10, a11, a12, a13, width: width, accumulate: accumulate) }
            if rows > 2 { storeFeatures(dst + 2 * ldc, a20, a21, a22, a23, width: width, accumulate: accumulate) }
            if rows > 3 { storeFeatures(dst + 3 * ldc, a30, a31, a32, a33, width: width, accumulate: accumulate) }
        }
    }

    /// One row of `matmulPanels`'s tile: `c[f] = sum_k x[k] W[f0 + f, k]` for `f < width` (49 to 64) of
    /// the four panels `p0..p3`, summed over k in order.
    @inline(__always)
    static func matmulPanelsRow(_ c: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                _ p0: UnsafePointer<Float>, _ p1: UnsafePointer<Float>, _ p2: UnsafePointer<Float>,
                                _ p3: UnsafePointer<Float>, k: Int, width: Int, accumulate: Bool) {
        var a0 = Vec(), a1 = Vec(), a2 = Vec(), a3 = Vec()
        for kk in 0..<k {
            let o = kk * 16
            let s = Vec(repeating: x[kk])
            a0.addProduct(s, load(p0, o)); a1.addProduct(s, load(p1, o))
            a2.addProduct(s, load(p2, o)); a3.addProduct(s, load(p3, o))
        }
        storeFeatures(c, a0, a1, a2, a3, width: width, accumulate: accumulate)
    }

    /// Writes (or with `accumulate` adds) the first `width` (at most 64) of the features `v0..v3` hold
    /// to `dst`.
    @inline(__always)
    static func storeFeatures(_ dst: UnsafeMutablePointer<Float>, _ v0: Vec, _ v1: Vec, _ v2: Vec, _ v3: Vec, width: Int, accumulate: Bool) {
        if width == 64 {
            if accumulate {
                let d = UnsafePointer(dst)
                store(v0 + load(d, 0), dst, 0); store(v1 + load(d, 16), dst, 16)
                store(v2 + load(d, 32), dst, 32); store(v3 + load(d, 48), dst, 48)
            } else {
                store(v0, dst, 0); store(v1, dst, 16); store(v2, dst, 32); store(v3, dst, 48)
            }
        } else {
            for f in 0..<width {
                let v = f < 16 ? v0 : f < 32 ? v1 : f < 48 ? v2 : v3
                dst[f] = v[f & 15] + (accumulate ? dst[f] : 0)
            }
        }
    }

    /// `C[b, f] = sum_k X[b, k] P[k, f]` for `b < m` and `f < width` (at most 16) of one `(k, 16)` panel
    /// `P`. Tiles of 8 rows keep 8 accumulators: per step of k, one panel load and 8 broadcasts feed 8
    /// fused multiply-adds. Each sum runs over k in order, as in `matmulPanels`'s tiles, so a feature
    /// gets the same bits whichever kernel computes it.
    @inline(__always)
    static func matmulPanel(_ c: UnsafeMutablePointer<Float>, ldc: Int, _ x: UnsafePointer<Float>, m: Int,
                            _ panel: UnsafePointer<Float>, k: Int, width: Int, accumulate: Bool) {
        var b = 0
        while b < m {
            let valid = min(8, m - b)
            // Rows past m reuse row b (their results are not stored).
            let x0 = x + b * k
            @inline(__always) func row(_ i: Int) -> UnsafePointer<Float> { i < valid ? x0 + i * k : x0 }
            let x1 = row(1), x2 = row(2), x3 = row(3), x4 = row(4), x5 = row(5), x6 = row(6), x7 = row(7)
            var a0 = Vec(), a1 = Vec(), a2 = Vec(), a3 = Vec(), a4 = Vec(), a5 = Vec(), a6 = Vec(), a7 = Vec()
            for kk in 0..<k {
                let v = load(panel, kk * 16)
                a0.addProduct(Vec(repeating: x0[kk]), v); a1.addProduct(Vec(repeating: x1[kk]), v)
                a2.addProduct(Vec(repeating: x2[kk]), v); a3.addProduct(Vec(repeating: x3[kk]), v)
                a4.addProduct(Vec(repeating: x4[kk]), v); a5.addProduct(Vec(repeating: x5[kk]), v)
                a6.addProduct(Vec(repeating: x6[kk]), v); a7.addProduct(Vec(repeating: x7[kk]), v)
            }
            @inline(__always) func put(_ i: Int, _ v: Vec) {
                guard i < valid else { return }
                let dst = c + (b + i) * ldc
                if width == 16 {
                    store(accumulate ? v + load(UnsafePointer(dst), 0) : v, dst, 0)
                } else {
                    for f in 0..<width { dst[f] = v[f] + (accumulate ? dst[f] : 0) }
                }
            }
            put(0, a0); put(1, a1); put(2, a2); put(3, a3); put(4, a4); put(5, a5); put(6, a6); put(7, a7)
            b += 8
        }
    }
}
