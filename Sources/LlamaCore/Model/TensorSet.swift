/// Named float32 tensors that live in one buffer: what a weight sync sends (a whole model, or only a
/// model's LoRA adapters) and what a consumer checks an announcement against.
public struct TensorSet: Sendable {
    /// One tensor: its name, its shape and where its elements lie in the buffer.
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let range: Range<Int>

        public init(name: String, shape: [Int], range: Range<Int>) {
            self.name = name
            self.shape = shape
            self.range = range
        }
    }

    /// The elements of every tensor.
    public let storage: FloatBuffer
    /// The tensors in their sending order.
    public let entries: [Entry]

    public init(storage: FloatBuffer, entries: [Entry]) {
        precondition(entries.allSatisfy { $0.range.upperBound <= storage.count }, "a tensor lies outside its buffer")
        self.storage = storage
        self.entries = entries
    }

    /// The little-endian bytes of the elements in `range` (a copy).
    public func bytes(of range: Range<Int>) -> [UInt8] {
        storage.withUnsafeBufferPointer { buffer in Array(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer[range]))) }
    }
}

extension ModelWeights {
    /// The stored tensors in checkpoint order, named as llama2.c's export names them.
    public var tensorSet: TensorSet {
        TensorSet(storage: storage, entries: layout.storedTensors.map {
            TensorSet.Entry(name: $0.name, shape: ParameterLayout.shape($0, config), range: layout.range($0))
        })
    }
}

extension [TensorSet.Entry] {
    /// The entries over a fresh zero buffer just large enough for them.
    public func tensorSet() -> TensorSet {
        TensorSet(storage: FloatBuffer(count: map(\.range.upperBound).max() ?? 0), entries: self)
    }
}
