#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The weights of one LLaMA2 model: a config, the layout of its tensors, and one `FloatBuffer` that
/// holds them all. Shared by reference across sessions and threads; never copied per sequence.
public struct ModelWeights: Sendable {
    /// The model's hyper-parameters.
    public let config: LlamaConfig
    /// Where each tensor lives in `storage`.
    public let layout: ParameterLayout
    /// Every tensor, in legacy order, 64-byte aligned.
    public let storage: FloatBuffer

    /// Wraps an existing buffer laid out for `config`.
    public init(config: LlamaConfig, storage: FloatBuffer) {
        let layout = ParameterLayout(config: config)
        precondition(storage.count == layout.totalCount, "storage does not match the config's layout")
        self.config = config
        self.layout = layout
        self.storage = storage
    }

    /// Zero weights (norm weights too) of `config`, with the legacy RoPE tables filled in.
    public init(zerosFor config: LlamaConfig) {
        let layout = ParameterLayout(config: config)
        self.init(config: config, storage: FloatBuffer(count: layout.totalCount))
        fillRoPETables()
    }

    /// Random weights for tests and benchmarks: matrices ~ N(0, std^2), norm weights 1, deterministic
    /// in `seed`.
    public static func random(config: LlamaConfig, seed: UInt64, std: Double = 0.02) -> ModelWeights {
        let weights = ModelWeights(zerosFor: config)
        var rng = SeededGenerator(seed: seed)
        weights.storage.withUnsafeMutableBufferPointer { buf in
            for tensor in weights.layout.trainableTensors {
                let range = weights.layout.range(tensor)
                if tensor.isNormWeight {
                    for i in range { buf[i] = 1 }
                } else {
                    for i in range { buf[i] = Float(rng.nextGaussian() * std) }
                }
            }
        }
        return weights
    }

    /// Fills the legacy `freq_cis` tables as llama2.c's export writes them: for position `t` and pair
    /// `i`, `cos/sin(t * theta^(-2i/hs))` (`LlamaConfig.ropeTables`).
    func fillRoPETables() {
        let real = layout.offset(.freqCisReal), imag = layout.offset(.freqCisImag)
        let tables = config.ropeTables()
        storage.set(tables.cos, at: real)
        storage.set(tables.sin, at: imag)
    }

    /// A deep copy (for training, which mutates its own weights).
    public func copy() -> ModelWeights {
        let other = FloatBuffer(count: storage.count)
        storage.withUnsafeBufferPointer { src in
            other.withUnsafeMutableBufferPointer { dst in
                dst.baseAddress!.update(from: src.baseAddress!, count: src.count)
            }
        }
        return ModelWeights(config: config, storage: other)
    }

    /// The little-endian bytes of the elements in `range` (a copy).
    public func bytes(of range: Range<Int>) -> [UInt8] {
        storage.withUnsafeBufferPointer { buffer in Array(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer[range]))) }
    }

    /// CRC-32C of the elements in `range` (their little-endian bytes).
    public func checksum(of range: Range<Int>) -> UInt32 {
        storage.withUnsafeBufferPointer { buffer in
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer[range])))
            return crc.value
        }
    }

    /// CRC-32C of the stored tensors' bytes in checkpoint order (alignment padding excluded): how
    /// peers compare the weights they hold.
    public var checksum: UInt32 {
        layout.storedTensors.dropFirst().reduce(checksum(of: layout.range(layout.storedTensors[0]))) { crc, tensor in
            let range = layout.range(tensor)
            return CRC32C.combine(crc, checksum(of: range), lengthOfB: range.count * 4)
        }
    }

    /// The stored elements of `tensor` as an array (for tests and tools; copies).
    public func values(_ tensor: ParameterTensor) -> [Float] {
        if tensor == .classifier && config.sharedClassifier { return values(.tokenEmbedding) }
        return storage.array(layout.range(tensor))
    }
}
