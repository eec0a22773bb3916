import CKernels
import LlamaCore

/// The projection matrices of a model transposed and cut into column panels: what a forward that no
/// backward pass follows multiplies by (`TrainableTransformer.prepareForScoring()`). `W (out, in)`
/// becomes `Wt (in, out)` stored panel after panel, panel `q` holding output features
/// `48q ..< 48q + w` (`w` = 48 but for the last) as `(in, w)` row-major, contiguous: the right-hand
/// operand of `rlhf_small_gemm_nn` laid out once, so a product needs no packing per call and no zeroing
/// of its output first (an sgemm call does both), and a tile's steps read contiguous memory. (Rows of
/// the whole `Wt`, one per input, put a tile's successive steps `out` floats apart, a page apart on the
/// 110M shape: the products ran at half the speed, 70-86 against 150-165 GFLOP/s on an Intel Xeon of
/// the class; the sums are the same either way.)
final class TransposedProjections {
    /// The matrices kept so.
    static let tensors: [ParameterTensor] = [.wq, .wk, .wv, .wo, .w1, .w2, .w3]

    private let storage: FloatBuffer
    /// Offset of `(tensor, layer)` in `storage`: `offsets[tensorIndex * nLayers + layer]`.
    private let offsets: [Int]
    private let nLayers: Int

    /// Bytes the transposed copies take for a model of `config`.
    static func bytes(_ config: LlamaConfig) -> Int {
        let layout = ParameterLayout(config: config)
        return tensors.reduce(0) { $0 + layout.count($1) } * MemoryLayout<Float>.size
    }

    /// Transposes every projection of `weights`, the matrices shared out over `pool`'s threads.
    init(weights: ModelWeights, pool: ComputePool) {
        let c = weights.config, layout = weights.layout
        nLayers = c.nLayers
        var offsets: [Int] = [], total = 0
        var shapes: [(source: Int, rows: Int, cols: Int)] = []
        for tensor in TransposedProjections.tensors {
            let shape = ParameterLayout.shape(tensor, c)
            let rows = shape[shape.count - 2], cols = shape[shape.count - 1]
            for l in 0..<c.nLayers {
                offsets.append(total)
                shapes.append((layout.offset(tensor, layer: l), rows, cols))
                total += rows * cols
            }
        }
        self.offsets = offsets
        storage = FloatBuffer(count: total)
        let source = weights.storage.baseAddress, out = storage.baseAddress, starts = offsets
        pool.parallelFor(shapes.count) { range, _ in
            for i in range {
                let (offset, rows, cols) = shapes[i]
                // W (rows = out, cols = in) -> panels of Wt: panel q's element (p, j) is W[48q + j, p],
                // 16 inputs at a time so that a block of W stays in cache.
                let w = source + offset, t = out + starts[i]
                let width = TransposedProjections.panelWidth
                for f0 in stride(from: 0, to: rows, by: width) {
                    let panelWidth = min(width, rows - f0), panel = t + f0 * cols
                    for p0 in stride(from: 0, to: cols, by: 16) {
                        for f in f0..<f0 + panelWidth {
                            for p in p0..<min(p0 + 16, cols) { panel[p * panelWidth + f - f0] = w[f * cols + p] }
                        }
                    }
                }
            }
        }
    }

    /// Output features a panel holds (the last panel of a matrix may hold fewer): three vectors of 16,
    /// the widest tile of `rlhf_small_gemm_nn`.
    static let panelWidth = 48

    /// `tensor`'s matrix of layer `l`, `(in, out)` in column panels of `panelWidth`.
    func matrix(_ tensor: ParameterTensor, _ l: Int) -> UnsafePointer<Float> {
        let index = TransposedProjections.tensors.firstIndex(of: tensor)!
        return UnsafePointer(storage.baseAddress + offsets[index * nLayers + l])
    }
}
