/// Every failure the compute core reports. Messages name the offending field, file or value.
public enum LlamaError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A config field is out of range or inconsistent with another.
    case invalidConfig(field: String, reason: String)
    /// A checkpoint file is malformed; `reason` gives expected and actual sizes where they apply.
    case invalidCheckpoint(path: String, reason: String)
    /// A tokenizer file is malformed or does not fit the model.
    case invalidTokenizer(path: String, reason: String)
    /// A request to the model is out of range (prompt too long, token id outside the vocabulary, ...).
    case invalidInput(String)
    /// A file could not be opened, read or written.
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidConfig(field, reason): return "invalid config: \(field): \(reason)"
        case let .invalidCheckpoint(path, reason): return "invalid checkpoint \(path): \(reason)"
        case let .invalidTokenizer(path, reason): return "invalid tokenizer \(path): \(reason)"
        case let .invalidInput(reason): return "invalid input: \(reason)"
        case let .io(path, reason): return "\(path): \(reason)"
        }
    }
}
