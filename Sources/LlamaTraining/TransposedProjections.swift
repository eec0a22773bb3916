import CKernels
import LlamaCore

/// The projection matrices of a model transposed, each `(in, out)` row-major: what a forward that no
/// backward pass follows multiplies by (`TrainableTransformer.prepareForScoring()`). With the right-hand
/// operand already laid out for `rlhf_small_gemm_nn`, a product needs no packing per call and no zeroing
/// of its output first (an sgemm call does both), and runs a block of columns at a time in a core's cache.
final class TransposedProjections {
    /// The transposed matrices.
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
                // (rows, cols) -> (cols, rows), in 16 x 16 blocks that stay in cache.
                let w = source + offset, t = out + starts[i]
                for r0 in stride(from: 0, to: rows, by: 16) {
                    for c0 in stride(from: 0, to: cols, by: 16) {
                        for r in r0..<min(r0 + 16, rows) {
                            for col in c0..<min(c0 + 16, cols) { t[col * rows + r] = w[r * cols + col] }
                        }
                    }
                }
            }
        }
    }

    /// `tensor`'s matrix of layer `l`, `(in, out)`.
    func matrix(_ tensor: ParameterTensor, _ l: Int) -> UnsafePointer<Float> {
        let index = TransposedProjections.tensors.firstIndex(of: tensor)!
        return UnsafePointer(storage.baseAddress + offsets[index * nLayers + l])
    }
}
